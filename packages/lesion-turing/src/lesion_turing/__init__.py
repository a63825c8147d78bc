"""lesion-turing: a visual Turing test in which experts tell real from synthetic lesion images."""

from .report import build_report, write_report
from .server import ServeConfig, make_server, serve
from .study import Rejected, Study, StudyError, StudySpec, create_study, open_study

__all__ = [
    "Rejected",
    "ServeConfig",
    "Study",
    "StudyError",
    "StudySpec",
    "build_report",
    "create_study",
    "make_server",
    "open_study",
    "serve",
    "write_report",
]
