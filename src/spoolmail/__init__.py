"""spoolmail: a spool-only sendmail and its sandboxed relay.

Keep this module empty of imports: the sendmail front imports the package on
every message, and its start-up cost is measured.
"""

__version__ = "0.1.0"
