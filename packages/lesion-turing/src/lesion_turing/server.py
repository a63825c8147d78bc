"""The quiz web server: standard-library `http.server`, every route explicit, every asset local.

What a rater's browser can see is fixed by construction: static pages identical for everyone,
opaque random ids (per rater and image) for the current image, progress counts, and their own
score once every answer is in. Images come out of the study database, never from a path in a
URL, and all have the same size, format and byte length. The results pages need the admin token.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from .report import build_report, fooled_sheet_png, plural, render_html, report_json, report_loading, start_warm_up
from .study import Rejected, Study

MAX_BODY = 4096
COOKIE = "turing_rater"
_TOKEN = r"[A-Za-z0-9_-]{8,64}"

_ASSET_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
# Read once at import; requests look names up in this dict and never touch the file system.
ASSETS = {
    f.name: (_ASSET_TYPES[f.name[f.name.rfind("."):]], f.read_bytes())
    for f in resources.files("lesion_turing").joinpath("assets").iterdir()
    if f.name[f.name.rfind("."):] in _ASSET_TYPES
}
# With --no-signup the start page keeps its text but loses the name form.
ASSETS["closed.html"] = (ASSETS["start.html"][0], re.sub(
    rb"<!-- signup.*<!-- /signup -->", b"<p><b>Please open the personal link you received from the organiser.</b></p>",
    ASSETS["start.html"][1], flags=re.S))

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# The report is one self-contained file (inline style, no script) that also works from disk.
ADMIN_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"

# Shown instead of the results while the statistics are still being imported after a start.
LOADING_PAGE = (b'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">'
                b"<title>Visual Turing test report</title></head><body><p>Loading the statistics (the first "
                b"opening after a start takes a few seconds); this page reloads by itself.</p></body></html>\n")


@dataclass(frozen=True)
class ServeConfig:
    db: str
    host: str = "127.0.0.1"
    port: int = 8000
    raters: tuple[str, ...] = field(default_factory=tuple)
    signup: bool = True  # False: only personal links made with --rater, no names typed in


# Token-shaped parts of a logged line: a path segment after /r/, /admin/ or /image/, a query string,
# and any run of 16+ URL-safe characters (the shortest token we issue) wherever a client put it.
_SECRET_PARTS = re.compile(rf"(/(?:r|admin|image)/){_TOKEN}|(\?)[^\s\"']*|[A-Za-z0-9_-]{{16,}}")


def redact(text: str) -> str:
    """`text` with every token of a quiz or admin URL replaced by "***" and query strings dropped."""
    return _SECRET_PARTS.sub(lambda m: (m.group(1) or m.group(2) or "") + "***", text)


class Handler(BaseHTTPRequestHandler):
    server_version = "lesion-turing"
    timeout = 60  # a silent client cannot hold a thread forever
    study: Study  # set on the subclass made by make_server
    signup: bool = True
    # On a loopback address, only loopback names: a foreign web page cannot reach the quiz through
    # DNS rebinding (its requests would carry its own host name).
    allowed_hosts: frozenset[str] | None = None

    def version_string(self) -> str:
        return self.server_version

    def __getattr__(self, name: str):
        # Any other method (PUT, DELETE, OPTIONS, made-up ones) is a 405, not http.server's 501.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self._send(405, b"method not allowed\n", "text/plain; charset=utf-8", {"Allow": "GET, POST"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- plumbing -----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None, csp: str = CSP) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on our own forms.
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", csp)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _redirect(self, location: str, headers: dict | None = None) -> None:
        self._send(303, b"", "text/plain; charset=utf-8", {"Location": location, **(headers or {})})

    def _error(self, status: int, message: str) -> None:
        if self.path.startswith("/api/"):
            self._json({"error": message}, status)
        else:
            self._send(status, f"{status} {HTTPStatus(status).phrase}: {message}\n".encode(), "text/plain; charset=utf-8")

    def send_error(self, code, message=None, explain=None):
        # http.server's own errors (bad request line, oversized headers) in our format and headers.
        self.close_connection = True
        if not getattr(self, "command", None):
            self.command = "GET"
        self._send(code, f"{code} {message or HTTPStatus(code).phrase}\n".encode(), "text/plain; charset=utf-8")

    def _body(self) -> bytes:
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise Rejected(411, "send a Content-Length, not a transfer encoding")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise Rejected(411, "Content-Length required")
        if not re.fullmatch(r"[0-9]{1,12}", length):  # str.isdigit would pass "²", which int() refuses
            self.close_connection = True
            raise Rejected(400, "bad Content-Length")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the unread body must not be parsed as a next request
            raise Rejected(413, f"request bodies are limited to {MAX_BODY} bytes")
        data = self.rfile.read(int(length))
        if len(data) != int(length):
            raise Rejected(400, "truncated body")
        return data

    def _require_type(self, expected: str) -> None:
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != expected:
            raise Rejected(415, f"expected Content-Type {expected}")

    def _same_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
            raise Rejected(403, "cross-origin request")

    def _cookie_token(self) -> str | None:
        try:
            morsel = SimpleCookie(self.headers.get("Cookie", "")).get(COOKIE)
        except CookieError:
            return None
        return morsel.value if morsel else None

    def _rater_cookie(self, token: str) -> dict:
        return {"Set-Cookie": f"{COOKIE}={token}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Strict"}

    def _admin(self, token: str) -> None:
        if not self.study.is_admin(token):
            raise Rejected(404, "not found")

    def log_message(self, format, *args) -> None:
        # The access log is for people watching the server: rater, image and admin tokens are
        # credentials, so they (and any query string) are masked before anything is printed.
        sys.stderr.write(f"{self.address_string()} - - [{self.log_date_time_string()}] {redact(format % args)}\n")

    def _dispatch(self, method: str) -> None:
        try:
            if self.allowed_hosts is not None:
                try:
                    host = urlsplit("//" + self.headers.get("Host", "")).hostname
                except ValueError:
                    raise Rejected(400, "malformed Host header") from None
                if host not in self.allowed_hosts:
                    raise Rejected(403, "unexpected Host header")
            path = self.path.split("?", 1)[0]
            for route_method, pattern, action in ROUTES:
                match = pattern.fullmatch(path)
                if match and route_method == method:
                    action(self, *match.groups())
                    return
            if any(p.fullmatch(path) for _, p, _ in ROUTES):
                self._method_not_allowed()
            else:
                raise Rejected(404, "not found")
        except Rejected as exc:
            self._error(exc.status, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # a 500 is a bug: say so and keep the trace on the server
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._error(500, "internal error")

    # -- routes -------------------------------------------------------------------------------

    def start_page(self) -> None:
        token = self._cookie_token()
        if token and self.study.rater_exists(token):
            self._redirect(f"/r/{token}")
        else:
            ctype, body = ASSETS["start.html" if self.signup else "closed.html"]
            self._send(200, body, ctype)

    def new_rater(self) -> None:
        if not self.signup:
            raise Rejected(403, "sign-up is closed; open your personal link")
        self._same_origin()
        self._require_type("application/x-www-form-urlencoded")
        try:
            form = parse_qs(self._body().decode("utf-8"), strict_parsing=True, max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            raise Rejected(400, "malformed form") from None
        names = form.get("name", [])
        if len(names) != 1:
            raise Rejected(400, "give exactly one name")
        token = self.study.add_rater(names[0])
        self._redirect(f"/r/{token}", self._rater_cookie(token))

    def quiz_page(self, token: str) -> None:
        if not self.study.rater_exists(token):
            raise Rejected(404, "unknown rater link")
        self._send(200, ASSETS["quiz.html"][1], ASSETS["quiz.html"][0], self._rater_cookie(token))

    def state(self, token: str) -> None:
        self._json(self.study.state(token))

    def image(self, token: str, item: str) -> None:
        self._send(200, self.study.image(token, item), "image/png")

    def answer(self, token: str) -> None:
        self._same_origin()
        self._require_type("application/json")
        try:
            data = json.loads(self._body())
        except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting fits in 4 KiB
            raise Rejected(400, "malformed JSON") from None
        if not isinstance(data, dict) or not {"item", "answer", "confidence"} <= data.keys() <= {
            "item", "answer", "confidence", "diagnosis"
        }:
            raise Rejected(400, "expected {item, answer, confidence[, diagnosis]}")
        if not isinstance(data["item"], str) or data["answer"] not in ("real", "synthetic"):
            raise Rejected(400, "answer must be 'real' or 'synthetic'")
        diagnosis = data.get("diagnosis")
        if diagnosis is not None and not isinstance(diagnosis, str):
            raise Rejected(400, "diagnosis must be a string")
        self.study.answer(token, data["item"], data["answer"] == "synthetic", data["confidence"], diagnosis)
        self._json(self.study.state(token))

    def static(self, name: str) -> None:
        if name not in ASSETS:
            raise Rejected(404, "not found")
        ctype, body = ASSETS[name]
        self._send(200, body, ctype)

    def no_icon(self) -> None:
        # Browsers ask for it on every page; "no content" keeps their consoles and our logs clean.
        self._send(204, b"", "image/x-icon")

    def admin_redirect(self, token: str) -> None:
        self._admin(token)
        self._redirect(f"/admin/{token}/")

    def admin_page(self, token: str) -> None:
        self._admin(token)
        if report_loading():
            self._send(200, LOADING_PAGE, "text/html; charset=utf-8", csp=ADMIN_CSP)
            return
        page = render_html(build_report(self.study), "fooled.png", raters=self.study.raters())
        self._send(200, page.encode(), "text/html; charset=utf-8", csp=ADMIN_CSP)

    def admin_json(self, token: str) -> None:
        self._admin(token)
        self._send(200, report_json(build_report(self.study)).encode(), "application/json")

    def admin_sheet(self, token: str) -> None:
        self._admin(token)
        self._send(200, fooled_sheet_png(self.study, build_report(self.study)), "image/png")


ROUTES = [
    (method, re.compile(pattern), action)
    for method, pattern, action in [
        ("GET", r"/", Handler.start_page),
        ("POST", r"/raters", Handler.new_rater),
        ("GET", rf"/r/({_TOKEN})", Handler.quiz_page),
        ("GET", rf"/api/r/({_TOKEN})/state", Handler.state),
        ("GET", rf"/api/r/({_TOKEN})/image/({_TOKEN})", Handler.image),
        ("POST", rf"/api/r/({_TOKEN})/answer", Handler.answer),
        ("GET", r"/static/([a-z]+\.[a-z]+)", Handler.static),
        ("GET", r"/favicon\.ico", Handler.no_icon),
        ("GET", rf"/admin/({_TOKEN})", Handler.admin_redirect),
        ("GET", rf"/admin/({_TOKEN})/", Handler.admin_page),
        ("GET", rf"/admin/({_TOKEN})/report\.json", Handler.admin_json),
        ("GET", rf"/admin/({_TOKEN})/fooled\.png", Handler.admin_sheet),
    ]
]


def make_server(study: Study, host: str = "127.0.0.1", port: int = 0, signup: bool = True) -> ThreadingHTTPServer:
    """A ready-to-run server for `study` (port 0 picks a free port: see `server.server_address`)."""
    loopback = host in ("127.0.0.1", "localhost", "::1")
    handler = type("StudyHandler", (Handler,), {
        "study": study, "signup": signup,
        "allowed_hosts": frozenset({"127.0.0.1", "localhost", "::1"}) if loopback else None,
    })
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(config: ServeConfig, study: Study) -> None:
    """Create the requested raters, print the links, and serve until interrupted."""
    for name in config.raters:
        if study.rater_token(name) is None:
            study.add_rater(name)
    server = make_server(study, config.host, config.port, config.signup)
    host, port = server.server_address[:2]
    base = f"http://{host}:{port}"
    print(f"Visual Turing test: {base}/  ({plural(study.n_images, 'image')}, {plural(len(study.raters()), 'rater')})")
    for name in config.raters:
        print(f"  personal link for {name}: {base}/r/{study.rater_token(name)}")
    # A new admin link at every start: the database keeps only a hash of the token, never the token.
    print(f"Results (admin only, keep private; replaces the link of any earlier start): "
          f"{base}/admin/{study.new_admin_token()}/", flush=True)
    start_warm_up()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
