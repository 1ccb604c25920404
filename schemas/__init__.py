"""The records herald reads and writes, with the validation of public input."""
