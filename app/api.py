"""The JSON management API under /api/v1 (gateway keys of scope `management`)."""
from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")
