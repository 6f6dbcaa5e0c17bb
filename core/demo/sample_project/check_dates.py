"""The check Shepherd runs after the fix: exits non-zero while the bug is there."""

from dates import parse_date

CASES = {
    "2024-03-07": (2024, 3, 7),
    "07/03/2024": (2024, 3, 7),
    "31/12/1999": (1999, 12, 31),
}

failed = 0
for text, want in CASES.items():
    try:
        got = parse_date(text)
    except Exception as e:  # noqa: BLE001
        got = f"error: {e}"
    mark = "ok " if got == want else "FAIL"
    failed += got != want
    print(f"{mark} parse_date({text!r}) = {got!r}, want {want!r}")
print(f"{len(CASES) - failed} passed, {failed} failed")
raise SystemExit(1 if failed else 0)
