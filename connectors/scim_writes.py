"""Writing to a SCIM service: conditional writes (If-Match, one retry on 412), removing a
group member, deactivating (both PATCH forms) and deleting a user. Every write answers with
what it did, or raises AlreadyDone when there was nothing left to do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import structlog

from connectors.base import AlreadyDone, TransientError
from connectors.http import HttpError, NotFound, PreconditionFailed
from connectors.scim_client import PATCH_OP, ScimClient, member_filter

log = structlog.get_logger(__name__)

# a server that refuses `"path": "active"` answers one of these; then try the value form
_PATH_FORM_REFUSED = frozenset({"invalidPath", "noTarget", "invalidSyntax"})


class ScimWrites(ScimClient):
    """The SCIM writes a leaver's offboarding needs."""

    def _conditional(
        self,
        client: httpx.Client,
        path: str,
        write: Callable[[httpx.Client, str, dict[str, Any], str | None], str],
    ) -> str:
        """Read the resource, write with its ETag; on 412 read again and write once more."""
        for attempt in (1, 2):
            current = self.read(client, path)
            if current is None:
                raise AlreadyDone(f"{path} no longer exists")
            resource, etag = current
            try:
                return write(client, path, resource, etag)
            except NotFound as exc:
                raise AlreadyDone(f"{path} no longer exists") from exc
            except PreconditionFailed as exc:
                if attempt == 2:
                    raise TransientError(
                        f"{self.name}: {path} changed while we wrote to it, twice; retry later"
                    ) from exc
                log.info("scim resource changed; reading it again", connector=self.name, path=path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _remove_member(
        self, user_id: str
    ) -> Callable[[httpx.Client, str, dict[str, Any], str | None], str]:
        def write(client: httpx.Client, path: str, group: dict[str, Any], etag: str | None) -> str:
            members = group.get("members") or []
            if not any(isinstance(m, dict) and m.get("value") == user_id for m in members):
                raise AlreadyDone(f"{path} no longer lists Users/{user_id} as a member")
            operation = {"op": "remove", "path": member_filter(user_id)}
            try:
                self._patch(client, path, [operation], etag)
            except HttpError as exc:
                if exc.code != "noTarget":  # RFC 7644 §3.5.2.2: the filter matched nobody
                    raise
                raise AlreadyDone(f"{path} no longer lists Users/{user_id} ({exc})") from exc
            name = group.get("displayName") or path
            return f"removed Users/{user_id} from the members of {name} ({path})"

        return write

    def _deactivate(
        self, client: httpx.Client, path: str, user: dict[str, Any], etag: str | None
    ) -> str:
        if user.get("active") is False:
            raise AlreadyDone(f"{path} is already inactive")
        try:
            self._patch(client, path, [{"op": "replace", "path": "active", "value": False}], etag)
            return f"set active=false on {path}"
        except HttpError as exc:
            if not (exc.status == 501 or exc.code in _PATH_FORM_REFUSED):
                raise
            log.info("scim path form refused; sending the value form", connector=self.name)
        self._patch(client, path, [{"op": "replace", "value": {"active": False}}], etag)
        return f"set active=false on {path} (value form; the server refused the path form)"

    def _delete_user(
        self, client: httpx.Client, path: str, user: dict[str, Any], etag: str | None
    ) -> str:
        self.write(client, "DELETE", path, None, etag)
        return f"deleted {path} ({user.get('userName', '?')})"

    def _patch(
        self, client: httpx.Client, path: str, operations: list[dict[str, Any]], etag: str | None
    ) -> None:
        body = {"schemas": [PATCH_OP], "Operations": operations}
        self.write(client, "PATCH", path, body, etag)
