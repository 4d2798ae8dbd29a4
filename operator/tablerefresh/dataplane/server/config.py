"""The served engine's configuration: ``config.xml`` (listeners) and ``users.xml`` (users, passwords,
grants), written into the directory that is the engine's working directory when it starts.

The engine is clickhouse-local (inside chDB): it reads ``config.xml`` from its working directory and
takes its users from the ``users.xml`` that names, and only from there. It has no writable user
directory (a ``local_directory`` in ``user_directories`` is ignored), so SQL ``CREATE USER`` is
refused (514) and so is ``GRANT`` (495, the users.xml storage is read-only); a user's rights are set
here, as ``grants``. Passwords are stored as SHA-256 hashes, never in clear.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Seconds an idle HTTP keep-alive connection is kept (the engine's default is 30).
# A stop waits for the connections still open, and the engine cuts those left after 5 s, exiting at
# once: a short keep-alive lets the idle ones of clients such as clickhouse-connect close before.
KEEP_ALIVE_SECONDS = 3
CONFIG = "config.xml"
USERS = "users.xml"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class ConfigRefused(ValueError):
    """An address, user or grant the served engine does not take."""


@dataclass(frozen=True)
class User:
    """A user of the served engine.

    ``password`` None: no password (as ``default`` always has). ``grants`` None: every
    right, with access management (``SHOW USERS``, ``SHOW GRANTS FOR``), as ``default`` has; otherwise
    exactly these, each a ``GRANT`` statement without its ``TO`` clause, e.g.
    ``"GRANT SELECT, INSERT ON db.*"``.
    """

    name: str
    password: str | None = None
    grants: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigRefused(f"user name {self.name!r}: letters, digits and underscores, not starting with a digit")
        for grant in self.grants or ():
            if not grant.lstrip().upper().startswith("GRANT ") or " TO " in grant.upper():
                raise ConfigRefused(f"grant {grant!r} of {self.name}: write 'GRANT … ON …', without 'TO'")


def parse_user(text: str) -> User:
    """``NAME:PASSWORD`` (``NAME:`` for no password), as ``tablerefresh serve --user`` takes it."""
    name, colon, password = text.partition(":")
    if not colon:
        raise ConfigRefused(f"--user {text!r}: write NAME:PASSWORD")
    return User(name, password or None)


def users_of(users: Mapping[str, str | None] | Iterable[User]) -> dict[str, User]:
    """The users by name, ``default`` first, with no password and every right.

    ``default`` cannot have a password or fewer rights: the engine's own session (the one that serves,
    and the one chDB opens when it is imported) logs in as ``default`` without a password, and the
    engine stops itself as ``default``. With a password on it, the engine does not start (516).
    """
    given = [User(name, password) for name, password in users.items()] if isinstance(users, Mapping) else list(users)
    by_name = {"default": User("default")}
    for user in given:
        if user.name == "default" and user != by_name["default"]:
            raise ConfigRefused(
                "default keeps no password and every right: the engine's own session logs in as default "
                "without one; give the other users passwords"
            )
        by_name[user.name] = user
    return by_name


def check_host(host: str) -> str:
    """The listen address, refused unless it is IPv4 loopback: the served engine is for this machine."""
    if host == "localhost":
        return LOOPBACK
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigRefused(f"listen address {host} refused: not an IP address; use {LOOPBACK}") from None
    if address.version != 4 or not address.is_loopback:
        raise ConfigRefused(
            f"listen address {host} refused: the served engine listens on loopback only (e.g. {LOOPBACK}); "
            "it has no TLS and is for development and tests"
        )
    return host


def config_xml(host: str, http_port: int, tcp_port: int) -> str:
    root = ET.Element("clickhouse")
    for tag, value in (
        ("listen_host", check_host(host)),
        ("http_port", str(http_port)),
        ("tcp_port", str(tcp_port)),
        ("keep_alive_timeout", str(KEEP_ALIVE_SECONDS)),
        ("users_config", USERS),
    ):
        ET.SubElement(root, tag).text = value
    return _text(root)


def users_xml(users: Mapping[str, User]) -> str:
    root = ET.Element("clickhouse")
    ET.SubElement(ET.SubElement(root, "profiles"), "default")
    ET.SubElement(ET.SubElement(root, "quotas"), "default")
    section = ET.SubElement(root, "users")
    for user in users.values():
        entry = ET.SubElement(section, user.name)
        if user.password is None:
            ET.SubElement(entry, "password").text = ""
        else:
            ET.SubElement(entry, "password_sha256_hex").text = hashlib.sha256(user.password.encode()).hexdigest()
        ET.SubElement(ET.SubElement(entry, "networks"), "ip").text = "::/0"  # the listener is loopback only
        ET.SubElement(entry, "profile").text = "default"
        ET.SubElement(entry, "quota").text = "default"
        if user.grants is None:
            ET.SubElement(entry, "access_management").text = "1"
            ET.SubElement(entry, "named_collection_control").text = "1"
        else:
            grants = ET.SubElement(entry, "grants")
            for grant in user.grants:
                ET.SubElement(grants, "query").text = grant
    return _text(root)


def write_config(directory: Path, *, host: str, http_port: int, tcp_port: int, users: Mapping[str, User]) -> None:
    """``config.xml`` and ``users.xml`` in ``directory``, readable by this user only."""
    for name, text in ((CONFIG, config_xml(host, http_port, tcp_port)), (USERS, users_xml(users))):
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)


def _text(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
