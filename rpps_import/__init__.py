"""Readers for the national files (RPPS/ADELI, FINESS) into canonical records, and their positions."""
