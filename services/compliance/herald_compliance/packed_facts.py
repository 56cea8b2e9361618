"""The facts index in memory, packed: about 40 bytes a remembered fact where a dict of key and marker objects
took 180 (and ~250 for the whole process) — issue 17's memory target is 150 MB per million facts.

A fact is remembered under a 12-byte digest of its key (`<account>|<fact key>`, BLAKE2b) in one fixed-size
record, `RECORD`: the digest, the marker's offset, time and epoch, and small numbers for its account, its
source and its changelog partition (each an index into a table of the distinct values seen). Records live in
65,536 buckets (bytearrays, by the digest's first two bytes), found with `bytearray.find`: every look-up,
insert and delete is a few C calls. A 96-bit digest makes a collision between two facts of one worker
(10,000,000 held at most by default) about 10^-15 likely.

In the changelog a fact is keyed `<account>|#<digest in hex>` (`changelog_key`) and its value is the marker's
JSON, as before. A record in the earlier format, keyed by the fact itself (`<account>|s:<message id>`), has the
same digest (the digest is of that very string), so it is found by the same look-ups; its key is kept aside
(`legacy`) so that forgetting it also deletes that record from the changelog. Such records are gone one dedupe
horizon after the upgrade. A marker that does not fit a record (a garbled value, numbers out of range) is kept
whole in `odd`: nothing read is lost.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from hashlib import blake2b
from typing import Any

DIGEST_BYTES = 12
# digest, offset, at (seconds), account, source, partition, epoch (NO_EPOCH: a marker from before epochs)
RECORD = struct.Struct("<12sqqIHHH")
SIZE = RECORD.size
BUCKET_BITS = 16
BUCKETS = 1 << BUCKET_BITS
NO_EPOCH = 0xFFFF
NEW_KEY = "|#"


def digest(account_id: str, fact_key: str) -> bytes:
    return blake2b(f"{account_id}|{fact_key}".encode(), digest_size=DIGEST_BYTES).digest()


def changelog_key(account_id: str, fact_digest: bytes) -> str:
    return f"{account_id}{NEW_KEY}{fact_digest.hex()}"


def parse_key(key: str) -> tuple[str, bytes, bool] | None:
    """(account, digest, whether in the earlier format) of a changelog key; None for a key that is neither."""
    account, sep, hexed = key.rpartition(NEW_KEY)
    if sep and len(hexed) == 2 * DIGEST_BYTES:
        try:
            return account, bytes.fromhex(hexed), False
        except ValueError:
            pass
    account, sep, fact = key.partition("|")
    if not sep:
        return None
    return account, digest(account, fact), True


class _Names:
    """Distinct strings numbered in order of arrival (accounts, sources): a record holds the number."""

    def __init__(self, limit: int) -> None:
        self.names: list[str] = []
        self._numbers: dict[str, int] = {}
        self._limit = limit

    def number(self, name: str) -> int | None:
        found = self._numbers.get(name)
        if found is None and len(self.names) < self._limit:
            found = self._numbers[name] = len(self.names)
            self.names.append(name)
        return found

    def nbytes(self) -> int:
        return sys.getsizeof(self.names) + sys.getsizeof(self._numbers) + sum(map(sys.getsizeof, self.names))


class PackedFacts:
    """Remembered facts: digest → (account, changelog partition, marker `[source, offset, at, epoch]`)."""

    def __init__(self) -> None:
        self._buckets: list[bytearray | None] = [None] * BUCKETS
        self._count = 0
        self._accounts = _Names(1 << 32)
        self._sources = _Names(1 << 16)
        self.odd: dict[bytes, tuple[str, int, Any]] = {}  # markers kept whole (see the module's doc)
        self.legacy: dict[bytes, str] = {}  # digest → its changelog key in the earlier format

    def __len__(self) -> int:
        return self._count + len(self.odd)

    # --- look-ups and changes ---------------------------------------------------------------------------------

    def get(self, fact_digest: bytes) -> Any:
        """The marker remembered for a fact, or None."""
        bucket, at = self._find(fact_digest)
        if at < 0:
            odd = self.odd.get(fact_digest)
            return None if odd is None else odd[2]
        return self._marker(RECORD.unpack_from(bucket, at))  # type: ignore[arg-type]

    def put(self, fact_digest: bytes, account_id: str, partition: int, marker: Any) -> None:
        packed = self._pack(fact_digest, account_id, partition, marker)
        self._remove(fact_digest)
        if packed is None:
            self.odd[fact_digest] = (account_id, partition, marker)
            return
        index = fact_digest[0] << 8 | fact_digest[1]
        bucket = self._buckets[index]
        if bucket is None:
            bucket = self._buckets[index] = bytearray()
        bucket += packed
        self._count += 1

    def delete(self, fact_digest: bytes) -> str | None:
        """Forget a fact; returns its changelog key in the earlier format when it was read in that one."""
        self._remove(fact_digest)
        return self.legacy.pop(fact_digest, None)

    def apply(self, partition: int, key: str, value: Any) -> bool:
        """One changelog record (the key as written, the value as JSON bytes or already decoded, None deletes);
        whether the key was one of a fact."""
        parsed = parse_key(key)
        if parsed is None:
            return False
        account_id, fact_digest, earlier = parsed
        if value is None:
            if earlier and self.legacy.get(fact_digest) != key:
                return True  # the fact is held under its new key (written again since): that record stands
            self._remove(fact_digest)
            self.legacy.pop(fact_digest, None)
            return True
        if isinstance(value, bytes | bytearray | str):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # kept as read (in `odd`)
        self.put(fact_digest, account_id, partition, value)
        if earlier:
            self.legacy[fact_digest] = key
        return True

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    # --- walking through them ---------------------------------------------------------------------------------

    def facts(self, start: int = 0, stop: int = BUCKETS) -> Iterator[tuple[bytes, str, int, Any]]:
        """(digest, account, partition, marker) of every fact, one bucket at a time (each copied as it is
        reached): facts may be changed or deleted while this runs. `start` and `stop` take the buckets of that
        range only (the facts kept whole come with the last bucket), so a long walk can go in parts."""
        for bucket in self._buckets[start:stop]:
            if bucket:
                for record in RECORD.iter_unpack(bytes(bucket)):
                    yield record[0], self._accounts.names[record[3]], record[5], self._marker(record)
        if stop >= BUCKETS:
            for fact_digest, (account_id, partition, marker) in list(self.odd.items()):
                yield fact_digest, account_id, partition, marker

    def remove_where(self, keep: Callable[[str, int], bool]) -> list[tuple[str, int, bytes, str | None]]:
        """Forget every fact for which `keep(account, partition)` is false; returns (account, partition, digest,
        key in the earlier format or None) of each forgotten."""
        names = self._accounts.names
        gone = [(names[r[3]], r[5], r[0]) for bucket in self._buckets if bucket
                for r in RECORD.iter_unpack(bytes(bucket)) if not keep(names[r[3]], r[5])]
        gone += [(account_id, partition, fact_digest) for fact_digest, (account_id, partition, _) in self.odd.items()
                 if not keep(account_id, partition)]
        return [(account_id, partition, fact_digest, self.delete(fact_digest))
                for account_id, partition, fact_digest in gone]

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the facts of these changelog partitions (from memory only: they moved to another worker, or
        their changelog is about to be read again); returns how many."""
        dropped = set(partitions)
        return len(self.remove_where(lambda _, partition: partition not in dropped))

    def nbytes(self) -> int:
        """The memory it holds: buckets, tables and every object in them."""
        total = sys.getsizeof(self._buckets) + sum(sys.getsizeof(b) for b in self._buckets if b is not None)
        total += self._accounts.nbytes() + self._sources.nbytes()
        total += sys.getsizeof(self.odd) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in self.odd.items())
        return total + sys.getsizeof(self.legacy) + sum(sys.getsizeof(k) + sys.getsizeof(v)
                                                        for k, v in self.legacy.items())

    # --- records ----------------------------------------------------------------------------------------------

    def _find(self, fact_digest: bytes) -> tuple[bytearray | None, int]:
        bucket = self._buckets[fact_digest[0] << 8 | fact_digest[1]]
        if not bucket:
            return bucket, -1
        at = bucket.find(fact_digest)
        while at >= 0 and at % SIZE:  # the digest's bytes across two records: look further
            at = bucket.find(fact_digest, at + 1)
        return bucket, at

    def _remove(self, fact_digest: bytes) -> None:
        bucket, at = self._find(fact_digest)
        if at >= 0:
            assert bucket is not None
            last = len(bucket) - SIZE
            if at != last:
                bucket[at:at + SIZE] = bucket[last:]
            del bucket[last:]
            self._count -= 1
        else:
            self.odd.pop(fact_digest, None)

    def _pack(self, fact_digest: bytes, account_id: str, partition: int, marker: Any) -> bytes | None:
        if not (isinstance(marker, list) and len(marker) in (3, 4) and isinstance(marker[0], str)
                and all(type(n) is int for n in marker[1:])):
            return None
        epoch = marker[3] if len(marker) == 4 else NO_EPOCH
        offset, at = marker[1], marker[2]
        if not (0 <= epoch <= NO_EPOCH and (epoch != NO_EPOCH or len(marker) == 3) and 0 <= partition < 1 << 16
                and -(1 << 63) <= offset < 1 << 63 and -(1 << 63) <= at < 1 << 63):
            return None
        account, source = self._accounts.number(account_id), self._sources.number(marker[0])
        if account is None or source is None:
            return None
        return RECORD.pack(fact_digest, offset, at, account, source, partition, epoch)

    def _marker(self, record: Sequence[Any]) -> list[Any]:
        source = self._sources.names[record[4]]
        if record[6] == NO_EPOCH:
            return [source, record[1], record[2]]
        return [source, record[1], record[2], record[6]]
