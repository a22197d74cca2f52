"""Tags and notes on runs: short slugs that group and filter runs (the run_tags table), and one free-text note
(runs.notes), checked here and written by RunTags, which the Registry mixes in.

A tag is 1 to 40 letters, digits and - _ . : (stored lower-case, so `Baseline` and `baseline` are one tag), at
most 20 on a run; a note is at most 2,000 characters. Each edit of a run's tags and note is one transaction that
first takes the run's write lock, so that concurrent edits never pass the limit and never half-apply.
"""

from __future__ import annotations

import re

from sqlalchemy import delete, insert, select, update

from moduletune.tasks.database import RegistryError, RunNotFound, run_tags, runs

MAX_TAG_CHARS = 40
MAX_TAGS = 20  # per run
MAX_NOTE_CHARS = 2000
TAG_PATTERN = re.compile(r"[a-z0-9_.:-]+")
ALLOWED = "letters, digits and - _ . : (no spaces)"


class TagError(RegistryError):
    """A tag or note that is not allowed; the message says which and what is."""


def check_tag(tag) -> str:
    """One tag as stored (stripped, lower-case); TagError saying what is wrong with it otherwise."""
    if not isinstance(tag, str):
        raise TagError(f"a tag is text ({ALLOWED}), got {tag!r}")
    text = tag.strip().lower()
    if not text:
        raise TagError(f"an empty tag; a tag is 1 to {MAX_TAG_CHARS} {ALLOWED}")
    if len(text) > MAX_TAG_CHARS:
        raise TagError(f"tag {text[:MAX_TAG_CHARS]}… has {len(text)} characters; a tag has at most {MAX_TAG_CHARS}")
    if not TAG_PATTERN.fullmatch(text):
        bad = next(c for c in text if not TAG_PATTERN.fullmatch(c))
        raise TagError(f"tag {tag.strip()!r} has {bad!r}; a tag is made of {ALLOWED}")
    return text


def check_tags(tags) -> list[str]:
    """Tags as stored (each checked, duplicates dropped, in order); a single string is one tag, None none."""
    if tags is None:
        return []
    out = list(dict.fromkeys(check_tag(t) for t in ([tags] if isinstance(tags, str) else tags)))
    if len(out) > MAX_TAGS:
        raise TagError(f"{len(out)} tags given; a run has at most {MAX_TAGS}")
    return out


def parse_tags(text) -> list[str]:
    """Tags typed in one box ('baseline, ln-only seed:3'): split at commas and white space, then checked."""
    return check_tags([part for part in re.split(r"[\s,]+", str(text or "")) if part])


def check_note(note) -> str | None:
    """A note as stored: its ends stripped, None for none (None or blank); TagError when too long or when it holds
    control characters (line breaks and tabs are fine)."""
    if note is None:
        return None
    if not isinstance(note, str):
        raise TagError(f"a note is text, got {type(note).__name__}")
    text = note.strip()
    if len(text) > MAX_NOTE_CHARS:
        raise TagError(f"a note has at most {MAX_NOTE_CHARS:,} characters; this one has {len(text):,}")
    bad = next((c for c in text if (ord(c) < 32 and c not in "\n\r\t") or ord(c) == 127), None)
    if bad is not None:
        raise TagError(f"a note cannot hold control characters (it has {bad!r}); line breaks and tabs are fine")
    return text or None


def tags_of(conn, run_ids) -> dict[int, list[str]]:
    """Each run's tags, sorted, for run_ids: a list of ids, or a SELECT of them (so that no long list is sent)."""
    query = (
        select(run_tags.c.run_id, run_tags.c.tag)
        .where(run_tags.c.run_id.in_(run_ids))
        .order_by(run_tags.c.run_id, run_tags.c.tag)
    )
    found: dict[int, list[str]] = {}
    for run_id, tag in conn.execute(query):
        found.setdefault(int(run_id), []).append(tag)
    return found


def with_tags(query, tags):
    """A query of runs narrowed to those that carry every one of tags (one tag, or several)."""
    for tag in check_tags(tags):
        query = query.where(runs.c.id.in_(select(run_tags.c.run_id).where(run_tags.c.tag == tag)))
    return query


class RunTags:
    """A registry's tag and note edits (a mixin over tasks.registry.Registry's `engine`)."""

    def tag(self, run_id: int, tags) -> list[str]:
        """Add tags to a run (those it has stay); returns its tags, sorted."""
        return self.annotate(run_id, add=tags)["tags"]

    def untag(self, run_id: int, tags) -> list[str]:
        """Take tags off a run (those it lacks are ignored); returns its tags, sorted."""
        return self.annotate(run_id, remove=tags)["tags"]

    def set_tags(self, run_id: int, tags) -> list[str]:
        """Make a run's tags exactly these; returns them, sorted."""
        return self.annotate(run_id, replace=check_tags(tags))["tags"]

    def set_note(self, run_id: int, note: str | None) -> str | None:
        """Set a run's note (None or blank clears it); returns it as stored."""
        return self.annotate(run_id, note=note or "")["notes"]

    def annotate(self, run_id: int, add=(), remove=(), replace=None, note: str | None = None) -> dict:
        """In one transaction: a run's tags replaced (replace), added to (add) and taken from (remove), and its note
        set (None: left as it is; blank: cleared). Returns {"id", "tags", "notes"}; nothing changes on an error."""
        add, remove = check_tags(add), check_tags(remove)
        replace = None if replace is None else check_tags(replace)
        run_id = int(run_id)
        with self.engine.begin() as conn:
            # The first statement writes (the note, or the note over itself): it takes the run's row lock
            # (PostgreSQL) or the database's write lock (SQLite) before anything is read, so edits of one run run
            # one after another and SQLite never has to turn a stale read into a write.
            value = runs.c.notes if note is None else check_note(note)
            if conn.execute(update(runs).where(runs.c.id == run_id).values(notes=value)).rowcount != 1:
                raise RunNotFound(f"no run with id {run_id}")
            have = set(conn.execute(select(run_tags.c.tag).where(run_tags.c.run_id == run_id)).scalars())
            want = (set(have if replace is None else replace) | set(add)) - set(remove)
            if len(want) > MAX_TAGS:
                raise TagError(
                    f"run {run_id} would have {len(want)} tags; a run has at most {MAX_TAGS} (it has {len(have)})"
                )
            if have - want:
                conn.execute(
                    delete(run_tags).where(run_tags.c.run_id == run_id, run_tags.c.tag.in_(sorted(have - want)))
                )
            if want - have:
                conn.execute(insert(run_tags), [{"run_id": run_id, "tag": t} for t in sorted(want - have)])
            notes = conn.execute(select(runs.c.notes).where(runs.c.id == run_id)).scalar()
        return {"id": run_id, "tags": sorted(want), "notes": notes}

    def pass_tags_on(self, parent_id: int) -> None:
        """Give a search's tags to its children (candidates and runs) that lack them."""
        with self.engine.begin() as conn:
            # Taking the write lock first, as annotate does, by touching the parent's row.
            conn.execute(update(runs).where(runs.c.id == int(parent_id)).values(notes=runs.c.notes))
            tags = conn.execute(select(run_tags.c.tag).where(run_tags.c.run_id == int(parent_id))).scalars().all()
            if not tags:
                return
            children = select(runs.c.id).where(runs.c.parent_id == int(parent_id))
            have = {(i, t) for i, t in conn.execute(select(run_tags).where(run_tags.c.run_id.in_(children)))}
            missing = [
                {"run_id": child, "tag": tag}
                for child in conn.execute(children).scalars()
                for tag in tags
                if (child, tag) not in have
            ]
            if missing:
                conn.execute(insert(run_tags), missing)
