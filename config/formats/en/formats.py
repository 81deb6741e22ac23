"""Days written YYYY-MM-DD, as the admin's times, titles and day filters write them.

Django's English locale writes "Nov. 23, 2026"; only the display format is
replaced, the formats forms accept stay Django's.
"""

DATE_FORMAT = "Y-m-d"
