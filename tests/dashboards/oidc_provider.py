"""A minimal OpenID Connect provider on 127.0.0.1 for the console's single sign-on test: discovery,
an authorization endpoint that approves `email` at once, a token endpoint issuing RS256-signed ID
tokens (with the nonce), JWKS and userinfo. Real protocol, real signatures; no browser prompts."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "llmwatch-console"
CLIENT_SECRET = "test-client-secret"


class OidcProvider:
    def __init__(self, email: str) -> None:
        self.email = email  # who signs in next; a test may change it
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key"})
        self.codes: dict[str, dict[str, str]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def secrets_toml(self, console_url: str) -> str:
        """The `[auth]` section of .streamlit/secrets.toml for a console at `console_url`."""
        return (
            "[auth]\n"
            f'redirect_uri = "{console_url}/oauth2callback"\n'
            f'cookie_secret = "{secrets.token_hex(16)}"\n'
            f'client_id = "{CLIENT_ID}"\n'
            f'client_secret = "{CLIENT_SECRET}"\n'
            f'server_metadata_url = "{self.issuer}/.well-known/openid-configuration"\n'
        )

    def id_token(self, nonce: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.email, "aud": CLIENT_ID, "iat": now, "exp": now + 600,
                  "nonce": nonce, "email": self.email, "email_verified": True, "name": self.email.split("@")[0]}
        return jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, self.key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._json({
                        "issuer": provider.issuer, "authorization_endpoint": f"{provider.issuer}/authorize",
                        "token_endpoint": f"{provider.issuer}/token", "jwks_uri": f"{provider.issuer}/jwks",
                        "userinfo_endpoint": f"{provider.issuer}/userinfo", "response_types_supported": ["code"],
                        "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
                        "scopes_supported": ["openid", "email", "profile"],
                        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    })
                elif url.path == "/jwks":
                    self._json({"keys": [provider.key.as_dict(private=False)]})
                elif url.path == "/userinfo":
                    self._json({"sub": provider.email, "email": provider.email})
                elif url.path == "/authorize":
                    if query.get("client_id") != CLIENT_ID:
                        self.send_error(400, "unknown client")
                        return
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = {"nonce": query.get("nonce", ""), "redirect_uri": query["redirect_uri"]}
                    self.send_response(302)
                    self.send_header("Location", f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_error(404)

            def do_POST(self) -> None:  # noqa: N802
                if urlsplit(self.path).path != "/token":
                    self.send_error(404)
                    return
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                else:
                    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
                grant = provider.codes.pop(form.get("code", ""), None)
                if (client_id, secret) != (CLIENT_ID, CLIENT_SECRET) or grant is None \
                        or grant["redirect_uri"] != form.get("redirect_uri"):
                    self.send_error(400, "invalid_grant")
                    return
                self._json({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 600,
                            "id_token": provider.id_token(grant["nonce"])})

        return Handler
