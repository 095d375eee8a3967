"""Domain validators for government data, vectorised over Arrow string arrays.

Each takes a string array and returns a BooleanArray that is True where a value is *invalid*
(null is never invalid here: whether a value is required is the ``required`` rule's business).
"""

from quality.validators.checkdigits import invalid_resident_id, invalid_uscc
from quality.validators.formats import (
    MOBILE_PATTERN,
    PHONE_PATTERN,
    REGION_CODE_PATTERN,
    invalid_mobile,
    invalid_phone,
    invalid_region_code,
)

VALIDATORS = {
    "uscc": invalid_uscc,
    "resident_id": invalid_resident_id,
    "region_code": invalid_region_code,
    "mobile": invalid_mobile,
    "phone": invalid_phone,
}

__all__ = [
    "MOBILE_PATTERN",
    "PHONE_PATTERN",
    "REGION_CODE_PATTERN",
    "VALIDATORS",
    "invalid_mobile",
    "invalid_phone",
    "invalid_region_code",
    "invalid_resident_id",
    "invalid_uscc",
]
