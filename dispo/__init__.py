"""Dispo: national directory and availability index for the SAS (Service d'accès aux soins)."""

__version__ = "0.1.0"
