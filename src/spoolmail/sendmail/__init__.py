"""The sendmail-compatible front: parse sendmail's argv, write one spool file."""
