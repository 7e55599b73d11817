"""Writing a jobs DataFrame to csv, parquet or excel (the grid's export button and the CLI)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from jobmanager.errors import BadParams

FORMATS = ("csv", "parquet", "excel")
EXCEL_MAX_ROWS = 1_048_575  # one row of the sheet is the header


def write_frame(df: pd.DataFrame, path: str | os.PathLike[str], format: str = "csv") -> Path:
    """Write ``df`` to ``path``; times are naive UTC (Excel has no time zones)."""
    if format not in FORMATS:
        raise BadParams(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    out = Path(path).expanduser()
    if not out.parent.is_dir():
        raise BadParams(f"cannot write {out}: folder {out.parent} does not exist")
    try:
        if format == "csv":
            df.to_csv(out, index=False)
        elif format == "parquet":
            df.to_parquet(out, index=False)
        else:
            if len(df) > EXCEL_MAX_ROWS:
                raise BadParams(f"{len(df)} rows do not fit in an Excel sheet; export csv or parquet")
            df.to_excel(out, index=False, sheet_name="jobs")
    except ImportError as exc:
        raise BadParams(f"export to {format} needs {exc.name}: pip install 'jobmanager[history]'") from None
    except OSError as exc:
        raise BadParams(f"cannot write {out}: {exc.strerror or exc}") from None
    return out
