"""Parse ISO (YYYY-MM-DD) and European (DD/MM/YYYY) dates."""


def parse_date(text: str) -> tuple[int, int, int]:
    text = text.strip()
    if "-" in text:
        year, month, day = (int(p) for p in text.split("-"))
        return year, month, day
    if "/" in text:
        month, day, year = (int(p) for p in text.split("/"))  # bug: this is DD/MM/YYYY
        return year, month, day
    raise ValueError(f"unknown date format: {text!r}")
