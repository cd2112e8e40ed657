"""Logins, sessions and CSRF protection of the web console.

When the broker's Kafka listeners are secured (``kafkite.doors``) the console asks for a login: a
SASL user of the broker (``sasl.plain.users`` or the SCRAM credentials of the user store) and its password,
checked as the Kafka listeners check them. A login opens a session: a random 256-bit token in the
``kafkite_session`` cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` on ``https://`` listeners), kept in
memory, ending after 30 idle minutes, 12 hours, at logout or when the broker stops. Until then every request
but the login page is refused (``/api/*`` with 401, pages with a redirect to ``/login``), and every JSON
endpoint answers as the session's principal ``User:<name>`` sees the broker: the Kafka authorizer's ACLs
decide what it lists and shows.

State-changing requests (anything but GET and HEAD), and every request to the OCI APIs the console serves
under ``/api/oci`` (a queue's GetMessages changes what other consumers see), must carry the session's CSRF
token in the ``X-CSRF-Token`` header (``/logout`` also takes it as the ``csrf`` form field) and, when the
browser sends ``Origin``, come from the console's own origin. ``GET /api/session`` tells the page its
principal and token. A console without logins (Kafka unsecured) still asks for a token, one per console, so
that no other site can make a browser change anything through it (a custom header needs the console's own
origin).
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from kafkite.doors import Caller, audit_change, audit_unauthenticated, login_checker
from kafkite.doors.audit import OK

if TYPE_CHECKING:
    from kafkite.broker.core import Broker

COOKIE = "kafkite_session"
IDLE_S = 30 * 60
MAX_AGE_S = 12 * 3600
MAX_SESSIONS = 10_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CALLER = web.RequestKey("kafkite.console.caller", Caller)
SESSION = web.RequestKey("kafkite.console.session", object)
CSRF = web.RequestKey("kafkite.console.csrf", str)  # the token this request's page must send back
GUARDED_PREFIX = "/api/oci/"  # every request here needs the CSRF token, whatever its method

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Session:
    token: str
    principal: str
    csrf: str
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)

    def live(self, now: float) -> bool:
        return now - self.seen < IDLE_S and now - self.created < MAX_AGE_S


class ConsoleAuth:
    """The console's sessions; ``secured`` False lets every request in as the anonymous principal."""

    def __init__(self, broker: Broker, secured: bool, tls: bool) -> None:
        self.broker = broker
        self.secured = secured
        self.tls = tls
        self.sessions: dict[str, Session] = {}
        self.open_csrf = secrets.token_urlsafe(32)  # the token of a console without logins

    # ------------------------------------------------------------------ sessions

    def session(self, request: web.Request) -> Session | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        s = self.sessions.get(token)
        now = time.monotonic()
        if s is None or not secrets.compare_digest(s.token, token):
            return None
        if not s.live(now):
            del self.sessions[token]
            return None
        s.seen = now
        return s

    def open(self, principal: str) -> Session:
        now = time.monotonic()
        if len(self.sessions) >= MAX_SESSIONS:
            self.sessions = {k: v for k, v in self.sessions.items() if v.live(now)}
            while len(self.sessions) >= MAX_SESSIONS:
                del self.sessions[min(self.sessions, key=lambda k: self.sessions[k].seen)]
        s = Session(secrets.token_urlsafe(32), principal, secrets.token_urlsafe(32))
        self.sessions[s.token] = s
        return s

    def set_cookie(self, resp: web.StreamResponse, s: Session) -> None:
        resp.set_cookie(
            COOKIE, s.token, httponly=True, samesite="Strict", secure=self.tls, path="/", max_age=MAX_AGE_S
        )

    # ------------------------------------------------------------------ the middleware

    def middleware(self) -> Middleware:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            address = request.remote or ""
            if request.method not in SAFE_METHODS and not _same_origin(request):
                return web.json_response({"error": "cross-origin request refused"}, status=403)
            if not self.secured:
                request[CALLER] = Caller(None, address, "console")
                request[CSRF] = self.open_csrf
                if request.path in ("/login", "/logout"):
                    return _see_other("/")
                if _guarded(request) and not _token_ok(request, self.open_csrf):
                    return web.json_response({"error": "missing or wrong CSRF token"}, status=403)
                return await handler(request)
            if request.path == "/login":
                return await self.login(request)
            s = self.session(request)
            if s is None:
                if request.path.startswith("/api/"):
                    return web.json_response({"error": "log in first"}, status=401)
                return _see_other("/login")
            request[CALLER] = Caller(s.principal, address, "console")
            request[SESSION] = s
            request[CSRF] = s.csrf
            if _guarded(request):
                given = request.headers.get(CSRF_HEADER, "")
                if not given and request.path == "/logout":
                    form = await request.post()
                    given = str(form.get("csrf", ""))
                if not given or not secrets.compare_digest(given, s.csrf):
                    return web.json_response({"error": "missing or wrong CSRF token"}, status=403)
            if request.path == "/logout":
                self.sessions.pop(s.token, None)
                resp = _see_other("/login")
                resp.del_cookie(COOKIE, path="/")
                return resp
            return await handler(request)

        return guard

    async def login(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            if self.session(request) is not None:
                return _see_other("/")
            return _login_page()
        form = await request.post()
        user = str(form.get("username", ""))
        password = str(form.get("password", ""))
        address = request.remote or ""
        if not user or not await login_checker(self.broker).check(user, password, "console"):
            audit_unauthenticated(
                self.broker, "console", address, "Login", "bad user or password", f"User:{user}"
            )
            return _login_page("Wrong user name or password.", status=401)
        s = self.open(f"User:{user}")
        audit_change(
            self.broker, Caller(s.principal, address, "console"), "Login", "session", "console", result=OK
        )
        resp = _see_other("/")
        self.set_cookie(resp, s)
        return resp


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _guarded(request: web.Request) -> bool:
    return request.method not in SAFE_METHODS or request.path.startswith(GUARDED_PREFIX)


def _token_ok(request: web.Request, expected: str) -> bool:
    given = request.headers.get(CSRF_HEADER, "")
    return bool(given) and secrets.compare_digest(given, expected)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or (origin == "null" and request.path == "/login"):
        return True
    return origin.split("://", 1)[-1] == request.host


def session_json(request: web.Request) -> dict[str, Any]:
    caller = request[CALLER]
    s = request.get(SESSION)
    return {
        "principal": caller.principal,
        "authenticated": isinstance(s, Session),
        "csrf_token": request.get(CSRF),
    }


def _login_page(error: str = "", status: int = 200) -> web.Response:
    message = f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kafkite console: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 15px system-ui, sans-serif; background: #f6f4f1; display: grid; place-items: center;
       height: 100vh; margin: 0; }}
form {{ background: #fff; padding: 2em 2.5em; border-radius: 8px; box-shadow: 0 1px 6px #0002; }}
h1 {{ font-size: 1.3em; margin: 0 0 1em; color: #c7472e; }}
label {{ display: block; margin: .7em 0 .2em; }}
input {{ font: inherit; padding: .4em; width: 16em; }}
button {{ margin-top: 1.2em; font: inherit; padding: .4em 1.2em; }}
.error {{ color: #b00020; }}
</style></head>
<body><form method="post" action="/login" id="login-form">
<h1>kafkite console</h1>
{message}<label for="username">User</label>
<input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<div><button type="submit" id="login-submit">Log in</button></div>
<p><small>A SASL user of the broker (PLAIN or SCRAM credentials).</small></p>
</form></body></html>
"""
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )
