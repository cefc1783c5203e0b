"""Delivery transports: SMTP (aiosmtplib), a command, or a Maildir."""
