"""`manage.py audit`: checks an operator runs against their own deployment (docs/security.md)."""
