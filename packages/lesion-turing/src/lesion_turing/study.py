"""The study database: one SQLite file holding the frozen image set, raters, their shuffled
assignments and every answer.

The quiz renditions of the images live in the file itself, so the server never opens a path at
request time and the report needs nothing but the database. The file is opened in WAL mode with
synchronous=FULL and every answer is its own committed transaction before the browser hears back:
killing the server loses nothing that was acknowledged.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import random
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .images import list_images, reencode, select_study

SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images(
    id INTEGER PRIMARY KEY,
    synthetic INTEGER NOT NULL CHECK (synthetic IN (0, 1)),
    source TEXT NOT NULL,
    png BLOB NOT NULL);
CREATE TABLE raters(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL UNIQUE,
    created REAL NOT NULL);
CREATE TABLE items(
    token TEXT PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id),
    UNIQUE (rater_id, position),
    UNIQUE (rater_id, image_id));
CREATE TABLE answers(
    item_token TEXT PRIMARY KEY REFERENCES items(token),
    said_synthetic INTEGER NOT NULL CHECK (said_synthetic IN (0, 1)),
    confidence INTEGER NOT NULL CHECK (confidence BETWEEN 1 AND 5),
    diagnosis TEXT,
    answered REAL NOT NULL);
"""

# A rater's current image: the first of their assignment without an answer.
_NEXT_ITEM = (
    "SELECT i.token FROM items i LEFT JOIN answers a ON a.item_token = i.token "
    "WHERE i.rater_id = ? AND a.item_token IS NULL ORDER BY i.position LIMIT 1"
)


class StudyError(ValueError):
    """A study that cannot be created or opened; the message names the file."""


class Rejected(Exception):
    """A request the study refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StudySpec:
    """What fixes a study: the folders, how many images and how they are rendered."""

    real: str
    synthetic: str
    n: int = 60
    size: int = 256
    jpeg_quality: int = 90
    seed: int = 0
    diagnoses: tuple[str, ...] = ()


def _token_hash(token: str) -> str:
    # A plain SHA-256 suffices: the token is 192 random bits, so there is nothing to guess that a
    # slow password hash (scrypt) would protect.
    return hashlib.sha256(token.encode()).hexdigest()


def _make_private_dirs(folder: Path) -> list[Path]:
    """Create the missing folders of `folder` readable by the owner only (existing ones untouched);
    returns those created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700)
    return missing


def create_study(db_path: str | os.PathLike, spec: StudySpec, progress=None) -> None:
    """Select and re-encode the image set and write a new study database (temp file + rename, so a
    failure leaves no half-made study behind). `progress` wraps the image iterator (e.g. tqdm).

    The database holds every answer and the raters' personal tokens, so it is created with mode
    0600 (SQLite gives its -wal and -shm files the same mode), and folders created for it with
    0700."""
    db_path = Path(db_path)
    if db_path.exists():
        raise StudyError(f"{db_path}: already exists")
    if db_path.parent.exists() and not db_path.parent.is_dir():
        raise StudyError(f"{db_path.parent}: not a folder")
    if not 16 <= spec.size <= 2048:
        raise StudyError(f"image size must be within 16..2048 px, got {spec.size}")
    if not 0 <= spec.jpeg_quality <= 100:
        raise StudyError(f"JPEG quality must be within 0..100 (0 = no JPEG round trip), got {spec.jpeg_quality}")
    chosen = select_study(list_images(spec.real), list_images(spec.synthetic), spec.n, spec.seed)
    try:
        created = _make_private_dirs(db_path.parent)
    except OSError as exc:
        raise StudyError(f"{db_path.parent}: cannot create the folder ({exc.strerror})") from None
    tmp = db_path.with_name(f".{db_path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        con = sqlite3.connect(tmp)
        with con:
            con.executescript(SCHEMA)
            meta = {
                "schema_version": SCHEMA_VERSION,
                "real": str(Path(spec.real).resolve()),
                "synthetic": str(Path(spec.synthetic).resolve()),
                "n": str(spec.n),
                "size": str(spec.size),
                "jpeg_quality": str(spec.jpeg_quality),
                "seed": str(spec.seed),
                "diagnoses": json.dumps(list(spec.diagnoses)),
                "created": str(time.time()),
            }
            con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            for path, synthetic in progress(chosen) if progress else chosen:
                png = reencode(path, spec.size, spec.jpeg_quality)
                con.execute(
                    "INSERT INTO images (synthetic, source, png) VALUES (?, ?, ?)", (int(synthetic), str(path), png)
                )
        con.close()
        os.replace(tmp, db_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in created:  # a failed creation leaves nothing behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def open_study(db_path: str | os.PathLike, spec: StudySpec | None = None, progress=None) -> Study:
    """Open the study in `db_path`, creating it from `spec` first if the file does not exist yet.

    An existing study is frozen: a `spec` that disagrees with it is an error rather than a silent
    change of the images half-way through.
    """
    if not Path(db_path).exists():
        if spec is None:
            raise StudyError(f"{db_path}: no such study database; give the real and synthetic folders to create it")
        create_study(db_path, spec, progress)
    study = Study(db_path)
    if spec is not None:
        wanted = {
            "real": str(Path(spec.real).resolve()), "synthetic": str(Path(spec.synthetic).resolve()),
            "n": str(spec.n), "size": str(spec.size), "jpeg_quality": str(spec.jpeg_quality),
            "seed": str(spec.seed), "diagnoses": json.dumps(list(spec.diagnoses)),
        }
        differ = sorted(k for k, v in wanted.items() if study.meta[k] != v)
        if differ:
            study.close()
            raise StudyError(
                f"{db_path}: the study there was made with other settings ({', '.join(differ)}); "
                "run with the same ones, without them, or use a new --db"
            )
    return study


class Study:
    """An open study database, safe to share between the server's threads."""

    def __init__(self, db_path: str | os.PathLike):
        self.path = Path(db_path)
        if not self.path.is_file():
            raise StudyError(f"{self.path}: no such study database")
        try:
            self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.execute("PRAGMA foreign_keys=ON")
            self.meta = dict(self._con.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            raise StudyError(f"{self.path}: not a study database ({exc})") from None
        if self.meta.get("schema_version") != SCHEMA_VERSION:
            raise StudyError(f"{self.path}: unknown study schema {self.meta.get('schema_version')!r}")
        self._lock = threading.Lock()
        self.diagnoses = tuple(json.loads(self.meta["diagnoses"]))
        if "admin_token" in self.meta:  # a study made when the token was kept in clear: keep its hash only
            try:
                self._set_meta("admin_token_sha256", _token_hash(self.meta.pop("admin_token")), drop="admin_token")
            except sqlite3.OperationalError:  # a read-only file, e.g. opened for a report: left as it is
                pass
        self.n_images = self._con.execute("SELECT count(*) FROM images").fetchone()[0]

    def _set_meta(self, key: str, value: str, drop: str | None = None) -> None:
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
                if drop:
                    self._con.execute("DELETE FROM meta WHERE key = ?", (drop,))
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        self.meta[key] = value

    def new_admin_token(self) -> str:
        """A fresh admin token for the results pages; only its hash is stored, and it replaces the
        previous one (whose links stop working)."""
        token = secrets.token_urlsafe(24)
        self._set_meta("admin_token_sha256", _token_hash(token))
        return token

    def is_admin(self, token: str) -> bool:
        stored = self.meta.get("admin_token_sha256")
        return stored is not None and hmac.compare_digest(_token_hash(token), stored)

    def close(self) -> None:
        self._con.close()

    def _query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._con.execute(sql, args).fetchall()

    # -- raters -------------------------------------------------------------------------------

    def add_rater(self, name: str) -> str:
        """Create a rater with a fresh personal token and their own random order of the image set."""
        name = " ".join(name.split())
        if not 1 <= len(name) <= 80 or not name.isprintable():
            raise Rejected(400, "a rater name needs 1 to 80 printable characters")
        token = secrets.token_urlsafe(18)
        image_ids = [row[0] for row in self._query("SELECT id FROM images")]
        random.SystemRandom().shuffle(image_ids)  # unpredictable, independent per rater
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                cur = self._con.execute(
                    "INSERT INTO raters (name, token, created) VALUES (?, ?, ?)", (name, token, time.time())
                )
                self._con.executemany(
                    "INSERT INTO items (token, rater_id, position, image_id) VALUES (?, ?, ?, ?)",
                    [(secrets.token_urlsafe(12), cur.lastrowid, pos, img) for pos, img in enumerate(image_ids)],
                )
                self._con.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._con.execute("ROLLBACK")
                raise Rejected(409, f"the name {name!r} is taken; open your personal link to continue") from None
        return token

    def rater_token(self, name: str) -> str | None:
        rows = self._query("SELECT token FROM raters WHERE name = ?", (" ".join(name.split()),))
        return rows[0][0] if rows else None

    def rater_exists(self, token: str) -> bool:
        return bool(self._query("SELECT 1 FROM raters WHERE token = ?", (token,)))

    def _rater(self, token: str) -> tuple[int, str]:
        rows = self._query("SELECT id, name FROM raters WHERE token = ?", (token,))
        if not rows:
            raise Rejected(404, "unknown rater link")
        return rows[0]

    def raters(self) -> list[dict]:
        rows = self._query(
            "SELECT r.name, r.token, count(a.item_token) FROM raters r JOIN items i ON i.rater_id = r.id "
            "LEFT JOIN answers a ON a.item_token = i.token GROUP BY r.id ORDER BY r.id"
        )
        return [{"name": n, "token": t, "answered": k, "total": self.n_images} for n, t, k in rows]

    # -- the quiz -----------------------------------------------------------------------------

    def state(self, token: str) -> dict:
        """What the rater's page may know: progress and the opaque id of the next image, nothing
        about the truth until every answer is in."""
        rater_id, name = self._rater(token)
        answered = self._query(
            "SELECT count(*) FROM items i JOIN answers a ON a.item_token = i.token WHERE i.rater_id = ?", (rater_id,)
        )[0][0]
        state = {"name": name, "total": self.n_images, "answered": answered, "diagnoses": list(self.diagnoses)}
        nxt = self._next_item(rater_id)
        state["item"] = nxt
        if nxt is None:
            state["result"] = self._own_result(rater_id)
        return state

    def _next_item(self, rater_id: int) -> str | None:
        rows = self._query(_NEXT_ITEM, (rater_id,))
        return rows[0][0] if rows else None

    def _own_result(self, rater_id: int) -> dict:
        (correct, total), = self._query(
            "SELECT coalesce(sum(a.said_synthetic = g.synthetic), 0), count(*) FROM items i "
            "JOIN answers a ON a.item_token = i.token JOIN images g ON g.id = i.image_id WHERE i.rater_id = ?",
            (rater_id,),
        )
        return {"correct": correct, "total": total}

    def image(self, token: str, item: str) -> bytes:
        rater_id, _ = self._rater(token)
        rows = self._query(
            "SELECT g.png FROM items i JOIN images g ON g.id = i.image_id WHERE i.token = ? AND i.rater_id = ?",
            (item, rater_id),
        )
        if not rows:
            raise Rejected(404, "unknown image")
        return rows[0][0]

    def answer(self, token: str, item: str, said_synthetic: bool, confidence: int, diagnosis: str | None) -> None:
        """Record one answer, only for the rater's current image, once; committed before returning."""
        if diagnosis is not None and diagnosis not in self.diagnoses:
            raise Rejected(400, "unknown diagnosis")
        if not (isinstance(confidence, int) and not isinstance(confidence, bool) and 1 <= confidence <= 5):
            raise Rejected(400, "confidence must be an integer from 1 to 5")
        rater_id, _ = self._rater(token)
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                owner = self._con.execute("SELECT rater_id FROM items WHERE token = ?", (item,)).fetchone()
                if owner is None or owner[0] != rater_id:
                    raise Rejected(404, "unknown image")
                current = self._con.execute(_NEXT_ITEM, (rater_id,)).fetchone()
                if current is None or current[0] != item:
                    raise Rejected(409, "this image was already answered or is not the current one")
                self._con.execute(
                    "INSERT INTO answers VALUES (?, ?, ?, ?, ?)",
                    (item, int(said_synthetic), confidence, diagnosis, time.time()),
                )
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    # -- results ------------------------------------------------------------------------------

    def answers(self) -> list[dict]:
        """Every answer with its truth, for the report (never for a rater's page)."""
        rows = self._query(
            "SELECT r.name, g.id, g.synthetic, a.said_synthetic, a.confidence, a.diagnosis, i.position, a.answered "
            "FROM answers a JOIN items i ON i.token = a.item_token JOIN raters r ON r.id = i.rater_id "
            "JOIN images g ON g.id = i.image_id ORDER BY r.id, i.position"
        )
        keys = ("rater", "image", "synthetic", "said_synthetic", "confidence", "diagnosis", "position", "answered")
        return [dict(zip(keys, row)) for row in rows]

    def images(self) -> list[dict]:
        rows = self._query("SELECT id, synthetic, source FROM images ORDER BY id")
        return [{"image": i, "synthetic": bool(s), "source": src} for i, s, src in rows]

    def image_png(self, image_id: int) -> bytes:
        return self._query("SELECT png FROM images WHERE id = ?", (image_id,))[0][0]
