"""The core of Dispo: canonical records, settings, reference geography and the import report.

Every other package builds on this one; it imports nothing of the project.
"""

__version__ = "0.1.0"
