"""The notebook tests read what the tiny workbook run recorded: fixtures `workbook_run` and `workbook_metrics` live in
tests/conftest.py (the browser tests open the same run's HTML reports)."""
