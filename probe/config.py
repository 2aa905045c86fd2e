"""The config file (TOML): where it is found, the keys it may hold, and their TOML types.

The key table is data: one `Key` per line maps `[section] name` to the click option of the
commands it configures. This module reads and type-checks the file; the values themselves are
checked by each option's own validation (probe/cli/config.py), so a file and a flag are judged
alike. Every problem is a `ConfigError` that prints as one line: `FILE:LINE: key: message`.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEASURING = ("run", "check", "daemon")
COMMANDS = ("run", "check", "daemon", "serve", "upload")

# TOML type names as a user reads them; "float" also takes an integer, "path" is a string
# resolved against the file's directory (a unit file's config does not depend on the cwd).
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "float": (int, float), "boolean": (bool,),
    "path": (str,), "list of strings": (list,), "list of paths": (list,),
}


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    param: str  # the click parameter's name (`param.name`), not the flag
    kind: str  # a key of _TYPES
    commands: tuple[str, ...] = MEASURING
    invert: bool = False  # `throughput = true` is `--no-throughput` absent
    secret: bool = False  # never printed by `probe config`

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


KEYS: tuple[Key, ...] = (
    Key("controls", "resolvers", "control_resolvers", "list of strings"),
    Key("controls", "test_helpers", "th_urls", "list of strings"),
    Key("controls", "third_party", "no_third_party", "boolean", invert=True),
    Key("controls", "helper", "helper_url", "string"),
    Key("controls", "helper_token", "helper_token", "string", secret=True),
    Key("controls", "ca_file", "ca_file", "path", (*MEASURING, "upload")),
    Key("vantage", "name", "vantage", "string"),
    Key("vantage", "asn", "probe_asn", "string"),
    Key("vantage", "country", "probe_cc", "string"),
    Key("run", "targets", "target_files", "list of paths", ("run", "daemon")),
    Key("run", "strict_lists", "strict", "boolean", ("run", "daemon")),
    Key("run", "out", "out_dir", "path", (*MEASURING, "upload")),
    Key("run", "concurrency", "concurrency", "integer", ("run", "daemon")),
    Key("run", "timeout", "timeout", "float"),
    Key("run", "throughput", "no_throughput", "boolean", invert=True),
    Key("run", "throughput_bytes", "throughput_bytes", "integer"),
    Key("run", "locate", "no_locate", "boolean", invert=True),
    Key("run", "data_budget", "data_budget", "integer"),
    Key("run", "pushgateway", "pushgateway", "string", ("run",)),
    Key("run", "textfile", "textfile", "path", ("run",)),
    Key("daemon", "interval", "interval", "float", ("daemon",)),
    Key("daemon", "jitter", "jitter", "float", ("daemon",)),
    Key("daemon", "run_timeout", "run_timeout", "float", ("daemon",)),
    Key("daemon", "listen", "listen", "string", ("daemon",)),
    Key("upload", "collector", "collector", "string", ("daemon", "upload")),
    Key("upload", "token", "collector_token", "string", ("daemon", "upload"), secret=True),
    Key("remote_write", "url", "remote_write_url", "string", ("run", "daemon")),
    Key("remote_write", "token", "remote_write_token", "string", ("run", "daemon"), secret=True),
    Key("remote_write", "user", "remote_write_user", "string", ("run", "daemon")),
    Key("remote_write", "password", "remote_write_password", "string", ("run", "daemon"),
        secret=True),
    Key("remote_write", "ca_file", "remote_write_ca", "path", ("run", "daemon")),
    Key("remote_write", "interval", "remote_write_interval", "float", ("daemon",)),
    Key("serve", "host", "host", "string", ("serve",)),
    Key("serve", "port", "port", "integer", ("serve",)),
    Key("serve", "cert", "cert", "path", ("serve",)),
    Key("serve", "key", "key", "path", ("serve",)),
    Key("serve", "token", "token", "string", ("serve",), secret=True),
    Key("serve", "ca_file", "ca_file", "path", ("serve",)),
    Key("serve", "resolver", "resolver", "string", ("serve",)),
    Key("serve", "timeout", "timeout", "float", ("serve",)),
    Key("serve", "deadline", "deadline", "float", ("serve",)),
    Key("serve", "max_concurrency", "max_concurrency", "integer", ("serve",)),
    Key("serve", "max_addresses", "max_addresses", "integer", ("serve",)),
    Key("serve", "allow_private_addresses", "allow_private_addresses", "boolean", ("serve",)),
    Key("serve", "insecure_http", "insecure_http", "boolean", ("serve",)),
    Key("serve", "collector", "collector_dir", "path", ("serve",)),
    Key("serve", "collector_tokens", "collector_tokens", "path", ("serve",)),
)
BY_NAME = {key.dotted: key for key in KEYS}
SECTIONS = tuple(dict.fromkeys(key.section for key in KEYS))


class ConfigError(Exception):
    """One line: FILE:LINE: key: message."""

    def __init__(self, path: Path, line: int | None, key: str, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {key}: {message}")


@dataclass(frozen=True)
class Entry:
    key: Key
    value: Any  # after the type check; paths resolved against the file's directory
    line: int


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    entries: tuple[Entry, ...]

    def get(self, dotted: str) -> Entry | None:
        return next((e for e in self.entries if e.key.dotted == dotted), None)


def search_path(env: dict[str, str] | None = None) -> list[Path]:
    """Where the file is looked for when --config is not given, first found wins."""
    env = dict(os.environ) if env is None else env
    xdg = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or "~").expanduser() / ".config")
    return [Path(xdg) / "probe" / "probe.toml", Path("/etc/probe/probe.toml")]


def find(env: dict[str, str] | None = None) -> Path | None:
    return next((p for p in search_path(env) if p.is_file()), None)


def load(path: Path) -> ConfigFile:
    """Reads, parses and type-checks the file; raises ConfigError on the first problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, None, "file", f"cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "file", "not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(path, exc) from None
    lines = _KeyLines(text)
    entries = []
    for section, table in data.items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise ConfigError(path, lines.find(None, section), section, _unknown_section(section))
        for name, value in table.items():
            key = BY_NAME.get(f"{section}.{name}")
            line = lines.find(section, name)
            if key is None:
                raise ConfigError(path, line, f"{section}.{name}", _unknown_key(section, name))
            entries.append(Entry(key, _typed(path, line, key, value), line))
    return ConfigFile(path, tuple(entries))


def _typed(path: Path, line: int, key: Key, value: Any) -> Any:
    types = _TYPES[key.kind]
    # a TOML boolean is a Python int: only a boolean key takes one
    ok = isinstance(value, types) and isinstance(value, bool) == (key.kind == "boolean")
    if ok and key.kind.startswith("list"):
        ok = all(isinstance(item, str) for item in value)
    if not ok:
        raise ConfigError(path, line, key.dotted, f"expected a {key.kind}, got {_toml_type(value)}")
    if key.kind == "path":
        return str(_resolve(path, value))
    if key.kind == "list of paths":
        return [str(_resolve(path, item)) for item in value]
    return float(value) if key.kind == "float" else value


def _resolve(config: Path, value: str) -> Path:
    return (config.parent / Path(value).expanduser()).absolute()


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _unknown_section(name: str) -> str:
    """A top-level key that belongs in a section (`timeout = 5`), or a misspelt section."""
    owners = [key.dotted for key in KEYS if key.name == name]
    if owners:
        return f"a key outside its section (did you mean {owners[0]!r}?)"
    hint = difflib.get_close_matches(name, SECTIONS, n=1, cutoff=0.5)
    where = f"did you mean {hint[0]!r}?" if hint else "known: " + ", ".join(SECTIONS)
    return f"unknown section ({where})"


def _unknown_key(section: str, name: str) -> str:
    here = [key.name for key in KEYS if key.section == section]
    hint = difflib.get_close_matches(name, here, n=1, cutoff=0.5)
    elsewhere = [key.dotted for key in KEYS if key.name == name]
    hint = hint or elsewhere
    return f"unknown key (did you mean {hint[0]!r}?)" if hint else "unknown key"


def _syntax_error(path: Path, exc: tomllib.TOMLDecodeError) -> ConfigError:
    # tomllib (3.11) puts the position only in the message: "... (at line 3, column 5)"
    message = str(exc)
    found = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if found:
        message = message[: found.start()] + f" (column {found.group(2)})"
        return ConfigError(path, int(found.group(1)), "syntax", message)
    return ConfigError(path, None, "syntax", message)


class _KeyLines:
    """The line of `[section]` and of `name = ...` in it (tomllib does not keep positions)."""

    _HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]")
    _KEY = re.compile(r"""^\s*["']?([A-Za-z0-9_.-]+?)["']?\s*=""")

    def __init__(self, text: str) -> None:
        self.seen: dict[tuple[str | None, str], int] = {}
        section: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if header := self._HEADER.match(line):
                section = header.group(1)
                self.seen.setdefault((None, section), number)
            elif key := self._KEY.match(line):
                name = key.group(1)
                if section is None and "." in name:  # a dotted key: run.timeout = 5
                    self.seen.setdefault(tuple(name.split(".", 1)), number)  # type: ignore[arg-type]
                self.seen.setdefault((section, name), number)

    def find(self, section: str | None, name: str) -> int:
        return self.seen.get((section, name)) or self.seen.get((None, section or name)) or 1
