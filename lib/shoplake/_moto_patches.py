"""Small fixes to moto, applied only inside the emulator process the local services starts.

* Kinesis shards looked up their newest sequence number by listing every record, and GetRecords scanned the whole
  shard from the start: put and read cost grew with the stream (quadratic replays). Sequence numbers of a shard are
  consecutive integers, so both become direct lookups; a shard whose numbers are not consecutive keeps moto's code.
* DynamoDB Query on a table's own key sorted and scanned every item of the table to find one partition; it now
  reads that partition directly, sorted by its range key cast once per item (index queries keep moto's code).
  Scan sorted the whole table again for every page; the sorted order is now kept until the next put or delete
  (updates change items in place). Each page then walked the table from its first item to the ExclusiveStartKey
  (comparing keys item by item): reading a table of N items took N²/page-size comparisons — a million order lines,
  ~500 pages, about half an hour. A page of a table's own key order now starts by bisection in the sorted order
  (same items, same pages: the first item after the start key, as moto's walk finds it).
* DynamoDB writes: building an item re-added the sizes of all its attributes after each one it set (to refuse items
  over 400 KB), ~140 size walks for a 16-attribute order line — half of what a BatchWriteItem cost the emulator. An
  item is now sized once, whole (the same limit and error: sizes only add up, so the running check fails exactly when
  the total does); later changes to an item keep moto's check.
* Memory: every moto model object is appended, when created, to a list of its class kept for ``/moto-api/data.json``
  and never removed — DynamoDB items replaced by later puts, the copy of every item a Query, Scan or BatchGetItem
  returned, deleted tables and streams with all they held: a million-line table read once for a reconciliation kept
  ~7 GB more. DynamoDB tables and items, Kinesis streams, shards and records are no longer listed there (nothing reads
  them from it: the services' own APIs do); every other model stays listed as moto has it.
* ``/moto-api/data.json`` failed with HTTP 500 as soon as a Lambda function existed (an attribute tries to reach
  Docker); attributes that raise are now skipped, as moto already does for unserialisable ones.
* Kinesis → Lambda: with an event-source mapping defined, moto tried to invoke the function (which needs Docker)
  once per record put, slowing every put ~4×. Locally shoplake's own runner (``shoplake.lambda_local``) executes the
  handlers with event-source-mapping semantics, so the emulator's push is switched off.
* DynamoDB responses: moto's response serializer walked every attribute value member by member through the service
  model (~1 ms per returned item: a Scan of 100k order lines spent ~100 s there). Attribute values are stored in
  their wire form already (``{"S": ...}``, ``{"N": "1.5"}``, nested ``M``/``L``), so those are copied as they are;
  binary values (``B``/``BS``) keep moto's own path.
* Firehose: moto caps an account at 50 delivery streams per region; AWS's quota in us-east-1 is 5,000. Parallel
  test sessions (one resource prefix each) share this emulator, so use the real quota.

Every patch, those above and those below, is checked against the moto version it was written for
(:data:`MOTO_VERSION`, the pin in ``pyproject.toml``) and refuses to apply to another (the emulator then fails to
start, loudly), because each relies on how that version's code behaves.

The patches below were added after profiling the DynamoDB emulator process on the order pipeline's own requests
(``bench/profile_dynamodb.py``: record them, replay them into moto's server app, sampled with py-spy):

* DynamoDB requests: moto parses every request body twice — ``json.loads``, then a walk of the result through the
  service model that rebuilds each attribute value member by member (S, N, B, SS, ... of every attribute of every
  item). For a BatchWriteItem of 25 order lines that walk was about a third of the request's cost. Attribute values
  without binaries (``B``/``BS``) come out of that walk exactly as they went in (strings, numbers-as-strings,
  booleans, lists and dicts are kept as they are), so such a value is now taken as it is, and a map of such values
  (an item, a key, ExpressionAttributeValues) is copied at once; binaries keep moto's walk (it decodes their base64).
  The response side's walk of an item likewise copies an item of wire-form values at once.
* DynamoDB projections (``ProjectionExpression`` of a Scan, Query, GetItem or BatchGetItem): moto turned the *whole*
  item into Python values (a deep copy, then boto3's deserializer, of every attribute), picked the projected paths,
  and serialized them back: the reconciliation's Scan of four attributes cost more than reading every attribute. When
  every path is a plain top-level name and the item holds only strings, numbers, booleans and nulls, only the
  projected attributes now make that round trip (through the same deserializer and serializer: numbers come back
  normalised as moto has them, e.g. ``1e3`` → ``1E+3``); other items and paths keep moto's code.
* DynamoDB sizes: moto sizes each attribute (for the 1 MB page, the 16 MB BatchGetItem answer and the 400 KB item
  limits: twice per item read by a Scan or Query) through a chain of type tests; a string or a number is now sized
  directly (UTF-8 bytes; the number's text length), as moto sizes it.
* DynamoDB Scan and Query copy every item they return (``copy.deepcopy``, attribute by attribute, before a
  projection or a filter). The copy of a scalar attribute (S, N, B, BOOL, NULL) is now made directly, without
  ``copy.deepcopy``'s dispatch per attribute; lists, maps and sets keep moto's own copy. Same copies, same sharing
  (the memo is kept). A Scan of the table with a projection and no filter expression (the reconciliation's) makes
  no copy at all: moto projects each copy into a new item and discards the copy; projecting reads the stored item
  without changing it.
* DynamoDB values: building a DynamoType from its wire form (``{"S": "x"}``: each attribute of each item put, read
  or compared) made two lists to take the one key and value, and a response's conversion back to the wire form
  (``dynamo_to_dict``) tested each value against five types; both now take the common case directly (a one-key dict;
  a string, number, boolean or null value, a dict, a list), every other case keeps moto's code.
* DynamoDB Query with a filter expression: moto copied every item the key condition found (the whole partition
  before the bound, for the order handler's Query of a customer's earlier lines), then filtered the copies. A Query of
  the table's own key now filters the stored items (a filter only reads them) and copies the ones it keeps: the same
  items, Count, ScannedCount and pages; the order pipeline's Queries cost the emulator about a third less.
* Every request: moto's dispatcher listed moto's package folder (``os.listdir`` + ``isdir`` on ~300 entries) to
  recognise a service name, for each request. The folder does not change while the process runs: listed once.
* S3 listings: each object of a ListObjects(V2) page went through moto's generic walk of the ``Object`` shape (an
  attribute picker and a dispatch for each of its nine members, present or not), and its ``LastModified`` — kept by
  moto as a string — was parsed again by dateutil to be written back the same way. An entry holding only the five
  members moto sets now goes through those members' own serializers directly, and a timestamp string is converted
  once (the conversion depends on the string and the format only). The local log follower lists the lake's newest
  objects ten times a second.
* Every request, every service: moto listed every member of the response class (``inspect.getmembers``) to find the
  action's method, drew its 52-character request id one ``choice`` per character, and searched six alias providers
  (an object each) for every member of every answer, present or not; Flask, in the debug mode moto runs its apps in,
  built a new class per request (a hint for browser form uploads). The action names are listed once per class, the id
  drawn in one call from moto's own (seedable) generator, the names tried for a member of a plain dict kept on its
  shape, and no class is built. Replayed on the order pipeline's 6,474 DynamoDB requests (``bench/profile_dynamodb``,
  small): 21.3 → 19.7 CPU s, every answer byte-identical; a GetItem alone ~470 → ~360 µs in-process.
* DynamoDB Query and Scan sized each item they read twice in a row (the 1 MB page check, then the running total),
  although moto had sized it already when it was written (the 400 KB check). An item now keeps the size it was
  written with until an UpdateItem (the only change moto makes in place) starts a new generation. The order
  pipeline's DynamoDB requests replayed (three alternated pairs): Queries 2.37–2.39 → 1.99–2.00 CPU s, the
  reconciliation's Scans 3.61–3.73 → 3.16–3.32, all 14.4–14.5 instead of 15.2–15.4; every answer byte-identical (a
  per-read memo, 3.37 → 3.05 on Queries replayed three times, came before it).
* Every DynamoDB comparison (key conditions, filters, ``IN`` lists, sorts, conditions) casts both values through five
  type tests (``cast_value``); a string, binary or boolean is its own cast and is now compared as it is. The
  handler's Queries (``stock_code IN (...)`` over a customer's lines: 769k casts in 1,184 Queries) replayed, three
  alternated pairs: 2.04–2.11 → 1.78–1.87 CPU s, BatchGetItem 1.33–1.40 → 1.19–1.24; every answer byte-identical.
* A parallel Scan hashed every item of the table once per segment to find its segment (MD5 of the hash key): the
  first byte is now kept on the item for its key. A projection's names are worked out once per Scan and its string
  attributes checked inline: the reconciliation's 37 Scan pages replayed (five times each, three alternated pairs)
  in 3.56–3.59 instead of 3.81–3.84 CPU s (median) for the projection part alone, every answer byte-identical.
"""

from __future__ import annotations

import bisect
import itertools
import json
import string
import threading
from typing import Any


def _patch_kinesis() -> None:
    _require_moto("_patch_kinesis")
    from moto.kinesis.models import Shard

    original_get_records = Shard.get_records

    def _contiguous(shard: Shard) -> bool:
        records = shard.records
        if not records:
            return True
        first, last = next(iter(records)), next(reversed(records))
        return last - first + 1 == len(records)

    def get_max_sequence_number(self: Shard) -> int:
        return next(reversed(self.records)) if self.records else 0

    def get_min_sequence_number(self: Shard) -> int:
        return next(iter(self.records)) if self.records else 0

    def put_record(self: Shard, partition_key: str, data: str, explicit_hash_key: str) -> str:
        from moto.kinesis.models import Record

        sequence_number = get_max_sequence_number(self) + 1
        self.records[sequence_number] = Record(partition_key, data, sequence_number, explicit_hash_key)
        return str(sequence_number)

    def get_records(self: Shard, last_sequence_id: str, limit: int | None) -> tuple[list[Any], int, int]:
        if not _contiguous(self):
            return original_get_records(self, last_sequence_id, limit)
        last = int(last_sequence_id)
        if not self.records:
            return [], last, 0
        first, newest = get_min_sequence_number(self), get_max_sequence_number(self)
        start = max(last + 1, first)
        stop = newest if limit is None else min(newest, start + int(limit) - 1)
        results = [self.records[n] for n in range(start, stop + 1)]
        if not results:
            return [], last, 0
        behind = self.records[newest].created_at - results[-1].created_at
        return results, results[-1].sequence_number, int(behind * 1000)

    Shard.get_max_sequence_number = get_max_sequence_number
    Shard.get_min_sequence_number = get_min_sequence_number
    Shard.put_record = put_record
    Shard.get_records = get_records


_QUERY = threading.local()
_SCAN = threading.local()


def _patch_dynamodb_query() -> None:
    _require_moto("_patch_dynamodb_query")
    from moto.dynamodb.models.table import Table

    original_query, original_all_items = Table.query, Table.all_items

    def query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        _QUERY.partition = (self, hash_key) if index_name is None and hash_key is not None else None
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            _QUERY.partition = None

    def in_key_order(self: Table) -> list[Any]:
        """moto's ``all_items``: every item sorted by (hash key, range key), DynamoType against DynamoType — which
        casts both values on every comparison (``==`` then ``<``: a million-item table took half a minute). A
        table's key attributes have one type each, and DynamoType compares two values of one type by their cast
        values, so each key is cast once here and the casts are compared; mixed types, an item without a range key
        (moto's sort key is then the hash key alone) or a table without one: moto's sort."""
        items = [item for bucket in self.items.values() for item in bucket.values()] if self.range_key_attr else []
        if not self.range_key_attr or not all(item.range_key for item in items):
            return original_all_items(self)
        if len({(item.hash_key.type, item.range_key.type) for item in items}) > 1:
            return original_all_items(self)
        return sorted(items, key=lambda x: (x.hash_key.cast_value, x.range_key.cast_value))

    def sorted_items(self: Table) -> list[Any]:
        """The table's items in moto's scan order, sorted once per generation (a put or delete starts a new one).
        The list is never changed: callers that may change what they get receive a copy."""
        cached = getattr(self, "_shoplake_sorted", None)
        generation = getattr(self, "_shoplake_generation", 0)
        if cached is None or cached[0] != generation:
            cached = (generation, in_key_order(self))
            self._shoplake_sorted = cached
        return cached[1]

    def all_items(self: Table) -> list[Any]:
        partition = getattr(_QUERY, "partition", None)
        if partition is None or partition[0] is not self:
            return list(sorted_items(self))
        bucket = self.items.get(partition[1])
        if bucket is None:
            return []
        if not self.range_key_attr:
            return [bucket]
        # one partition: order by the range key, each key cast once (DynamoType's __lt__ compares cast_value, and
        # re-casting it on every comparison made this sort the dearest part of a Query)
        return sorted(bucket.values(), key=lambda x: x.range_key.cast_value)

    def _bumping(method: Any) -> Any:
        def wrapper(self: Table, *args: Any, **kwargs: Any) -> Any:
            self._shoplake_generation = getattr(self, "_shoplake_generation", 0) + 1
            try:
                return method(self, *args, **kwargs)
            finally:
                self._shoplake_generation += 1

        return wrapper

    original_scan = Table.scan

    def scan(self: Table, *args: Any, **kwargs: Any) -> Any:
        """moto's scan of the table (not an index), handed an iterator over the sorted items from the first one after
        ``exclusive_start_key`` (found by bisection) on: moto's walk skips every item up to and including that key,
        and only iterates, so its pages are unchanged.

        An iterator, not a list: a list of the rest of a million-item table, new for every page (there were three),
        was traversed by every young-generation garbage collection while the page was built; at a million items the
        emulator spent more than half of a Scan's time collecting garbage (py-spy --native)."""
        start = kwargs.get("exclusive_start_key", args[2] if len(args) > 2 else None)
        index_name = kwargs.get("index_name", args[4] if len(args) > 4 else None)
        if index_name is not None or (start and self.hash_key_attr not in start):
            return original_scan(self, *args, **kwargs)
        from moto.dynamodb.models.dynamo_type import DynamoType

        items = sorted_items(self)
        if not start:
            position = 0
        elif self.range_key_attr:
            if self.range_key_attr not in start:
                return original_scan(self, *args, **kwargs)
            after = (DynamoType(start[self.hash_key_attr]), DynamoType(start[self.range_key_attr]))
            position = bisect.bisect_right(items, after, key=lambda x: (x.hash_key, x.range_key))
        else:
            after_hash = DynamoType(start[self.hash_key_attr])
            position = bisect.bisect_right(items, after_hash, key=lambda x: x.hash_key)
        _SCAN.rest = (self, itertools.islice(items, position, None))
        try:
            return original_scan(self, *args, **kwargs)
        finally:
            _SCAN.rest = None

    def all_items_or_rest(self: Table) -> Any:
        rest = getattr(_SCAN, "rest", None)
        if rest is not None and rest[0] is self:
            _SCAN.rest = None  # one walk per scan: a second caller gets a list of its own
            return rest[1]
        return all_items(self)

    Table.query = query
    Table.scan = scan
    Table.all_items = all_items_or_rest
    Table.put_item = _bumping(Table.put_item)
    Table.delete_item = _bumping(Table.delete_item)


ITEM_SIZE_LIMIT = 405000  # moto's own (dynamo_type.LimitedSizeDict): AWS's 400 KB, as measured between 409 and 410 KB


def _attributes_size(attrs: dict[str, Any]) -> int:
    """moto's Item.size of these attributes: the names' UTF-8 bytes plus the values' sizes (an ASCII name's length
    taken directly, without encoding it)."""
    total = 0
    for key, value in attrs.items():
        if type(key) is str and key.isascii():
            total += len(key)
        else:
            from moto.dynamodb.models.utilities import bytesize

            total += bytesize(key)
        total += value.size()
    return total


def _patch_dynamodb_item_size() -> None:
    _require_moto("_patch_dynamodb_item_size")
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    def __init__(self: Item, hash_key: DynamoType, range_key: DynamoType | None, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        values = {key: DynamoType(value) for key, value in attrs.items()}
        generation = _SizeCache.generation
        size = _attributes_size(values)
        if size > ITEM_SIZE_LIMIT:
            raise ItemSizeTooLarge
        self.attrs = LimitedSizeDict()
        dict.update(self.attrs, values)  # sized above; later item[key] = ... still goes through moto's check
        _remember_size(self, generation, size)  # read back by Item.size (_patch_dynamodb_size_cache)

    Item.__init__ = __init__


def _patch_untracked_models() -> None:
    _require_moto("_patch_untracked_models")
    from moto.core.common_models import BaseModel
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table
    from moto.kinesis.models import Record, Shard, Stream

    untracked = (Table, Item, Stream, Shard, Record)  # a deleted table or stream holds all its items or records
    original_new = BaseModel.__dict__["__new__"].__func__

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if issubclass(cls, untracked):
            return object.__new__(cls)  # what BaseModel.__new__ makes, without keeping it for ever
        return original_new(cls, *args, **kwargs)

    BaseModel.__new__ = staticmethod(__new__)


def _patch_model_data() -> None:
    _require_moto("_patch_model_data")
    from moto.moto_api._internal.responses import MotoAPIResponse

    def model_data(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        from moto.core.model_instances import model_data as tracked

        results: dict[str, dict[str, list[Any]]] = {}
        for service in sorted(tracked):
            results[service] = {}
            for name in sorted(tracked[service]):
                rows = results[service][name] = []
                for instance in tracked[service][name].instances_tracked:
                    row = {}
                    for attr in dir(instance):
                        if attr.startswith("_"):
                            continue
                        try:
                            value = getattr(instance, attr)
                            json.dumps(value)
                        except Exception:  # noqa: BLE001 - unserialisable or failing attribute: skipped, as moto does
                            continue
                        row[attr] = value
                    rows.append(row)
        return 200, {"Content-Type": "application/javascript"}, json.dumps(results)

    MotoAPIResponse.model_data = model_data


def _patch_lambda_push() -> None:
    _require_moto("_patch_lambda_push")
    from moto.awslambda.models import LambdaBackend

    def send_kinesis_message(self: Any, *args: Any, **kwargs: Any) -> None:
        return None  # handlers run in shoplake.lambda_local, not in the emulator

    LambdaBackend.send_kinesis_message = send_kinesis_message


_PLAIN_SCALARS = {"S": str, "N": str, "BOOL": bool, "NULL": bool}
_PLAIN_SETS = ("SS", "NS")


def _plain_attribute_value(value: Any) -> bool:
    """Whether ``value`` is a DynamoDB attribute value already in its JSON wire form (no binary inside)."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    ((kind, inner),) = value.items()
    if kind in _PLAIN_SCALARS:
        return isinstance(inner, _PLAIN_SCALARS[kind])
    if kind in _PLAIN_SETS:
        return isinstance(inner, list) and all(isinstance(v, str) for v in inner)
    if kind == "M":
        return isinstance(inner, dict) and all(_plain_attribute_value(v) for v in inner.values())
    if kind == "L":
        return isinstance(inner, list) and all(_plain_attribute_value(v) for v in inner)
    return False


def _patch_dynamodb_serializer() -> None:
    _require_moto("_patch_dynamodb_serializer")
    from moto.core.serialize import BaseJSONSerializer

    original = BaseJSONSerializer._serialize_type_structure

    def _serialize_type_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if key and shape.name == "AttributeValue" and _plain_attribute_value(value):
            serialized[key] = value  # already the wire form: what the member-by-member walk would produce
            return
        original(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = _serialize_type_structure


MOTO_VERSION = "5.2.5"  # pyproject.toml's pin: the version the patches below were written and tested against


def _require_moto(patch: str) -> None:
    """Refuse to apply ``patch`` to another moto than :data:`MOTO_VERSION` (it relies on that version's code)."""
    import moto

    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"shoplake._moto_patches.{patch} was written for moto {MOTO_VERSION}, this is moto {moto.__version__}: "
            "re-check the patch against the new code (tests/integration/test_emulator_patches.py compares each "
            "patch with moto's own answers), then update MOTO_VERSION"
        )


def _patch_dynamodb_request_parser() -> None:
    _require_moto("_patch_dynamodb_request_parser")
    from moto.core.parse import JSONParser

    original = JSONParser._parse_structure

    def _parse_structure(self: Any, shape: Any, value: Any) -> Any:
        if shape.name == "AttributeValue" and self.MAP_TYPE is dict and _plain_attribute_value(value):
            # what the member-by-member walk returns: strings, booleans and numbers (strings) as they are, SS/NS as
            # new lists of the same strings, M/L as dicts/lists of such values — equal, and of the same types
            return value
        return original(self, shape, value)

    original_map = JSONParser._parse_map

    def _parse_map(self: Any, shape: Any, value: Any) -> Any:
        if (
            shape.value.name == "AttributeValue"
            and self.MAP_TYPE is dict
            and type(value) is dict
            and all(type(k) is str for k in value)
            and all(_plain_attribute_value(v) for v in value.values())
        ):
            # an item, a key, ExpressionAttributeValues: moto's walk gives a new dict of the same (string) names and
            # each value parsed as above (taken as it is)
            return dict(value)
        return original_map(self, shape, value)

    JSONParser._parse_structure = _parse_structure
    JSONParser._parse_map = _parse_map


_PROJECTABLE = {"S": str, "BOOL": bool}  # round trip through boto3's (de)serializer: unchanged
_AS_IT_WAS = frozenset({"S", "BOOL", "NULL"})  # of the convertible types, those the round trip gives back unchanged


def _patch_dynamodb_projection() -> None:
    _require_moto("_patch_dynamodb_projection")
    import re

    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    original = Item.project
    list_index = re.compile(r"(.+)\[(\d+)\]$")  # moto's find_nested_key reads "name[3]" as a list element

    def _convertible(attribute: Any) -> bool:
        """Whether moto's conversion of this attribute to a Python value (its ``to_regular_json`` + boto3's
        deserializer, whose decimal context traps overflow, underflow and rounding) cannot raise: strings, booleans,
        NULL true, and plain decimal numbers (no exponent) of at most 38 characters; anything else: moto's code."""
        if type(attribute) is not DynamoType:
            return False
        kind, value = attribute.type, attribute.value
        if kind in _PROJECTABLE:
            return isinstance(value, _PROJECTABLE[kind])
        if kind == "N":
            return (
                isinstance(value, str)
                and len(value) <= 38
                and value.isascii()
                and value.removeprefix("-").replace(".", "", 1).isdigit()
            )
        return kind == "NULL" and value is True

    def _all_convertible(attrs: dict[str, Any]) -> bool:
        """``all(_convertible(a) for a in attrs.values())``, a string attribute (most of them) checked inline."""
        for attribute in attrs.values():
            if type(attribute) is DynamoType and attribute.type == "S" and type(attribute.value) is str:
                continue
            if not _convertible(attribute):
                return False
        return True

    last: list[tuple[Any, list[str] | None]] = [(None, None)]  # the last expression's names (a Scan's every item)

    def plain_names(projection_expressions: list[list[str]]) -> list[str] | None:
        """The expression's top-level names, or None when a path is nested or a list element (moto's code then).
        Remembered for the expression object a Scan or Query projects each of its items with (one tuple, read once:
        a thread that reads another thread's entry only finds it is not its expression and works it out again)."""
        known, names = last[0]
        if known is projection_expressions:
            return names
        names = [path[0] for path in projection_expressions if len(path) == 1]
        if len(names) != len(projection_expressions) or any(list_index.match(name) for name in names):
            names = None
        last[0] = (projection_expressions, names)
        return names

    def project(self: Item, projection_expressions: list[list[str]]) -> Item:
        names = plain_names(projection_expressions)
        if names is None or not _all_convertible(self.attrs):
            return original(self, projection_expressions)
        # moto: every attribute → Python (to_regular_json), each found path merged in expression order, the result
        # serialized back; for top-level names of such an item that is each projected attribute's own round trip
        # (a string, a boolean or NULL comes back as it was, so the projection shares its value object: a projection
        # is only read; numbers go through the conversion). A projection of an item that holds is no larger than it:
        # it is not sized again.
        attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.__init__(attrs)
        for name in names:
            attribute = self.attrs.get(name)
            if attribute is None:
                continue
            if attribute.type in _AS_IT_WAS:
                dict.__setitem__(attrs, name, attribute)
            else:
                value = dynamo_type.deserializer.deserialize(attribute.to_regular_json())
                dict.__setitem__(attrs, name, DynamoType(dynamo_type.serializer.serialize(value)))
        projected = Item.__new__(Item)
        projected.hash_key, projected.range_key, projected.attrs = self.hash_key, self.range_key, attrs
        return projected

    Item.project = project


_STRING_SIZED = frozenset({"S", "B", "BOOL", "NULL"})  # DynamoType.size: bytesize(value) (a bool: 1)
_SCALAR_TYPES = frozenset({"S", "N", "B", "BOOL", "NULL"})  # DynamoType.__deepcopy__ shares their value
_PROJECTING_SCAN = threading.local()


def _patch_dynamodb_item_copy() -> None:
    _require_moto("_patch_dynamodb_item_copy")
    import copy

    from moto.dynamodb.comparisons import OpDefault
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from moto.dynamodb.models.table import Table

    new_type = DynamoType.__new__

    def _copy(value: Any, memo: dict[int, Any]) -> Any:
        if type(value) is DynamoType and value.type in _SCALAR_TYPES:
            clone = memo.get(id(value))
            if clone is None:
                # DynamoType.__deepcopy__ for a scalar: a new object with the same type and (immutable) value
                clone = new_type(DynamoType)
                clone.type, clone.value = value.type, value.value
                memo[id(value)] = clone
            return clone
        return copy.deepcopy(value, memo)

    def __deepcopy__(self: Item, memo: dict[int, Any]) -> Item:
        """moto's Item.__deepcopy__ (no size re-check), each scalar attribute copied without copy.deepcopy's
        dispatch; none at all inside a projecting Scan (see ``scan`` below)."""
        if getattr(_PROJECTING_SCAN, "table", None) is not None:
            return self
        if id(self) in memo:  # pragma: no cover - as moto: items hold no cycles
            return memo[id(self)]
        result = self.__class__.__new__(self.__class__)
        memo[id(self)] = result
        result.hash_key = _copy(self.hash_key, memo)
        result.range_key = _copy(self.range_key, memo)  # None → copy.deepcopy(None): None
        attrs_copy = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.__init__(attrs_copy)
        for key, value in self.attrs.items():
            dict.__setitem__(attrs_copy, key, _copy(value, memo))
        result.attrs = attrs_copy
        return result

    original_scan = Table.scan

    def scan(self: Table, *args: Any, **kwargs: Any) -> Any:
        """A Scan of the table (not an index) with a projection and no filter expression: moto copies each item,
        then projects the copy (a new item built from it, the copy discarded). Reading the stored item instead gives
        the same projection (projecting does not change the item it reads), so no copy is made."""
        names = (
            "filters",
            "limit",
            "exclusive_start_key",
            "filter_expression",
            "index_name",
            "consistent_read",
            "projection_expression",
        )
        bound = dict(zip(names, args, strict=False)) | kwargs
        no_filter = type(bound.get("filter_expression")) in (type(None), OpDefault)  # moto's "no expression"
        if not bound.get("projection_expression") or not no_filter or bound.get("index_name"):
            return original_scan(self, *args, **kwargs)
        _PROJECTING_SCAN.table = self
        try:
            return original_scan(self, *args, **kwargs)
        finally:
            _PROJECTING_SCAN.table = None

    Item.__deepcopy__ = __deepcopy__
    Table.scan = scan


_FILTERING_QUERY = threading.local()


def _patch_dynamodb_filtered_query() -> None:
    _require_moto("_patch_dynamodb_filtered_query")
    import copy

    from moto.dynamodb.comparisons import OpDefault
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    names = (
        "range_comparison",
        "range_objs",
        "limit",
        "exclusive_start_key",
        "scan_index_forward",
        "projection_expressions",
        "index_name",
        "consistent_read",
        "filter_expression",
    )
    original_query = Table.query
    original_deepcopy = Item.__deepcopy__

    def query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        """A Query of the table's own key with a filter expression: moto copies every item of the page (the whole
        partition, for the order handler's Query of a customer's earlier lines), then filters the copies. Filtering
        the stored items (the filter only reads them) and copying those it keeps gives the same items, count and
        page; the projection is then applied to the copies, as moto does."""
        bound = dict(zip(names, args, strict=False)) | kwargs
        extra = set(kwargs) - set(names) - {"hash_key_conditions", "range_key_conditions"}
        expression = bound.get("filter_expression")
        if bound.get("index_name") or extra or expression is None or type(expression) is OpDefault:
            return original_query(self, hash_key, *args, **kwargs)
        projections = bound.get("projection_expressions")
        bound.update(filter_expression=None, projection_expressions=None)
        _FILTERING_QUERY.table = self
        try:
            stored, scanned, last_key = original_query(self, hash_key, **bound)
        finally:
            _FILTERING_QUERY.table = None
        results = [copy.deepcopy(item) for item in stored if expression.expr(item)]
        if projections:
            results = [item.project(projections) for item in results]
        return results, scanned, last_key

    def __deepcopy__(self: Item, memo: dict[int, Any]) -> Item:
        """No copy inside a filtering Query's walk (see ``query`` above): the kept items are copied afterwards."""
        if getattr(_FILTERING_QUERY, "table", None) is not None:
            return self
        return original_deepcopy(self, memo)

    Table.query = query
    Item.__deepcopy__ = __deepcopy__


def _patch_dynamodb_sizes() -> None:
    _require_moto("_patch_dynamodb_sizes")
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    original_size = DynamoType.size

    def size(self: DynamoType) -> int:
        """moto's DynamoType.size for a string (S, or B/BOOL/NULL holding one, as moto sizes those: UTF-8 bytes) or
        a number (N: its text's length) without moto's chain of type tests; anything else: moto's code."""
        kind, value = self.type, self.value
        if type(value) is str:
            if kind == "N":
                return len(value)  # moto: len(str(value))
            if kind in _STRING_SIZED:
                return len(value) if value.isascii() else len(value.encode("utf-8"))  # moto: bytesize(value)
        return original_size(self)

    def item_size(self: Item) -> int:
        """moto's Item.size."""
        return _attributes_size(self.attrs)

    DynamoType.size = size
    Item.size = item_size


class _SizeCache:
    """State of the item-size cache (:func:`_patch_dynamodb_size_cache`), shared by the emulator's request threads.

    ``generation`` changes when an in-place change of items (an UpdateItem, on its own or within a
    TransactWriteItems) begins and again when it ends; a size is remembered with the generation it was taken in and
    is good only while that generation lasts. While a change runs (``changing`` > 0) sizes are neither remembered
    nor read back."""

    active = False  # set by _patch_dynamodb_size_cache: items remember their size from then on
    generation = 0
    changing = 0
    lock = threading.Lock()


_GENERATION_MASK = 0xFFFFFFFF  # a remembered size keeps the low 32 bits of its generation


def _remember_size(item: Any, generation: int, size: int) -> None:
    """Keep ``size`` on ``item`` as taken in ``generation`` (nothing while an in-place change runs): one int,
    ``size << 32 | generation``, stored in one step (request threads may size one item at once) and small (a million
    stored items carry one: 5 MB per 100k items in the replay, where a tuple of generation, attributes and size took 8)."""
    if _SizeCache.active and not _SizeCache.changing:
        item.__dict__["_shoplake_size"] = size << 32 | generation & _GENERATION_MASK


def _patch_dynamodb_size_cache() -> None:
    _require_moto("_patch_dynamodb_size_cache")
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import Item

    item_size = Item.size
    update_item = DynamoDBBackend.update_item

    def size(self: Item) -> int:
        """``Item.size``, remembered on the item from its creation (moto sizes each new item to refuse one over
        400 KB) until an in-place change: a Query or a Scan sized every item it read, twice (the 1 MB page check,
        then the running total) — a sixth of a Scan of the order history, a fifth of a Query of a customer's lines.
        Items only change in place within UpdateItem (moto's PutItem, BatchWriteItem, PartiQL and restores build new
        ones); every UpdateItem starts a new generation, in which what was remembered before is sized again."""
        if _SizeCache.changing:
            return item_size(self)
        generation = _SizeCache.generation  # read before sizing: a change that begins meanwhile voids the entry
        packed = self.__dict__.get("_shoplake_size")
        if packed is not None and packed & _GENERATION_MASK == generation & _GENERATION_MASK:
            return packed >> 32
        value = item_size(self)
        _remember_size(self, generation, value)
        return value

    def changing_in_place(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        with _SizeCache.lock:
            _SizeCache.changing += 1
            _SizeCache.generation += 1
        try:
            return update_item(self, *args, **kwargs)
        finally:
            with _SizeCache.lock:
                _SizeCache.generation += 1
                _SizeCache.changing -= 1

    Item.size = size
    DynamoDBBackend.update_item = changing_in_place  # TransactWriteItems' updates call it too
    _SizeCache.active = True


_CAST_AS_IS = frozenset({"S", "B", "BOOL"})  # DynamoType.cast_value: the value itself (moto's last branch)


def _patch_dynamodb_cast_value() -> None:
    _require_moto("_patch_dynamodb_cast_value")
    from moto.dynamodb.models.dynamo_type import DynamoType

    original_cast, original_eq = DynamoType.cast_value.fget, DynamoType.__eq__

    def cast_value(self: DynamoType) -> Any:
        """moto's ``cast_value`` — what comparisons and sorts compare — without its five type tests when the value
        is its own cast (a string, a binary, a boolean); numbers, sets, lists, maps and NULL: moto's code."""
        if self.type in _CAST_AS_IS:
            return self.value
        return original_cast(self)

    def __eq__(self: DynamoType, other: DynamoType) -> bool:
        """moto's ``==`` (same type, equal casts) on two strings, binaries or booleans: their values compared."""
        kind = self.type
        if kind in _CAST_AS_IS and kind == other.type:
            return self.value == other.value
        return original_eq(self, other)

    DynamoType.cast_value = property(cast_value)
    DynamoType.__eq__ = __eq__


def _patch_dynamodb_segments() -> None:
    _require_moto("_patch_dynamodb_segments")
    from moto.dynamodb.models.dynamo_type import Item
    from moto.utilities.utils import md5_hash

    original = Item.is_within_segment

    def is_within_segment(self: Item, segments: tuple[Any, Any]) -> bool:
        """moto's segment of an item (the first byte of the MD5 of its hash key's text, modulo the segments) with that
        byte kept on the item for the key object it was taken of: a parallel Scan of S segments hashed every item of
        the table S times per pass (the reconciliation's two-segment Scan: 2 MD5s per item). Keys never change in
        place; another key object, or a key that is not text, is hashed as moto does."""
        if segments == (None, None):
            return True
        key = self.hash_key
        known = self.__dict__.get("_shoplake_key_byte")
        if known is None or known[0] is not key:
            if type(key.value) is not str:
                return original(self, segments)
            known = self.__dict__["_shoplake_key_byte"] = (key, md5_hash(key.value.encode("utf8")).digest()[0])
        segment, total_segments = segments
        return segment == known[1] % total_segments

    Item.is_within_segment = is_within_segment


def _patch_dynamodb_values() -> None:
    _require_moto("_patch_dynamodb_values")
    from moto.dynamodb import responses
    from moto.dynamodb.models import utilities
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict

    original_init, original_to_dict = DynamoType.__init__, utilities.dynamo_to_dict

    def __init__(self: DynamoType, type_as_dict: Any) -> None:
        """moto's DynamoType.__init__ for a one-key dict (a wire-form value): its key and value, lists and maps
        converted member by member as moto does; anything else (a DynamoType to copy, ...): moto's code."""
        if type(type_as_dict) is not dict or len(type_as_dict) != 1:
            return original_init(self, type_as_dict)
        ((kind, value),) = type_as_dict.items()
        self.type = kind
        if kind == "L":
            self.value = [DynamoType(v) for v in value]
        elif kind == "M":
            self.value = {k: DynamoType(v) for k, v in value.items()}
        else:
            self.value = value
        return None

    def dynamo_to_dict(obj: Any) -> Any:
        """moto's dynamo_to_dict (a response's DynamoTypes → wire form) without its chain of type tests for the
        common cases: a string, number, boolean or null value ({type: value}, as moto's recursion returns a str or
        bool unchanged), a plain dict or an item's attributes (a dict subclass without ``to_json``), a list."""
        cls = type(obj)
        if cls is DynamoType:
            value = obj.value
            if obj.type in _PLAIN_SCALARS and type(value) in (str, bool):
                return {obj.type: value}
        elif cls is dict or cls is LimitedSizeDict:
            return {k: dynamo_to_dict(v) for k, v in obj.items()}
        elif cls is list:
            return [dynamo_to_dict(item) for item in obj]
        return original_to_dict(obj)

    DynamoType.__init__ = __init__
    utilities.dynamo_to_dict = dynamo_to_dict  # moto's own recursion calls it by this name
    responses.dynamo_to_dict = dynamo_to_dict  # DynamoResult's


def _patch_dynamodb_serializer_maps() -> None:
    _require_moto("_patch_dynamodb_serializer_maps")
    from moto.core.serialize import BaseJSONSerializer

    original = BaseJSONSerializer._serialize_type_map

    def _serialize_type_map(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if (
            shape.value.name == "AttributeValue"
            and self.MAP_TYPE is dict
            and type(value) is dict
            and all(type(k) is str and k for k in value)  # an empty name takes another path in moto's walk
            and all(_plain_attribute_value(v) for v in value.values())
        ):
            # an item (or key) of a response: moto's walk puts a new dict there and copies each wire-form value
            # into it under its name (_patch_dynamodb_serializer); made at once
            self._default_serialize(serialized, dict(value), shape, key)
            return
        original(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_map = _serialize_type_map


def _patch_backend_lookup() -> None:
    _require_moto("_patch_backend_lookup")
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())  # moto's installed service folders: fixed while it runs

    def list_of_moto_modules() -> Any:
        return iter(modules)

    backends.list_of_moto_modules = list_of_moto_modules


def _patch_firehose_batch_response() -> None:
    _require_moto("_patch_firehose_batch_response")
    from moto.core.serialize import BaseJSONSerializer

    original = BaseJSONSerializer._serialize_type_structure

    def _serialize_type_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        """An entry of Firehose's PutRecordBatch answer (one per record, 500 per call) as moto's walk over its three
        members gives it when the entry holds only its record id (a string: ErrorCode and ErrorMessage are absent):
        ``{"RecordId": id}``, without the attribute picker for each member; anything else: moto's walk."""
        if (
            key
            and shape.name == "PutRecordBatchResponseEntry"
            and type(value) is dict
            and len(value) == 1
            and type(value.get("RecordId")) is str
        ):
            serialized[key] = {"RecordId": value["RecordId"]}
            return
        original(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = _serialize_type_structure


_PLAIN_OBJECT = {"Key": str, "LastModified": str, "ETag": str, "Size": int, "StorageClass": str}  # what moto sets
_TIMESTAMP_MEMO = 65536  # converted timestamp strings kept (the memo starts over when full)


def _plain_listing_entry(value: Any) -> bool:
    """A ListObjects(V2) entry as moto builds it for an object: the five members it always sets, each of its usual
    type, and maybe ``ChecksumAlgorithm`` (a list of one name); not an owner or anything else."""
    if type(value) is not dict or not 5 <= len(value) <= 6:
        return False
    if len(value) == 6:
        algorithms = value.get("ChecksumAlgorithm")
        if type(algorithms) is not list or not all(type(a) is str for a in algorithms):
            return False
    return all(type(value.get(name)) is kind for name, kind in _PLAIN_OBJECT.items())


def _patch_s3_listing_entries() -> None:
    _require_moto("_patch_s3_listing_entries")
    from moto.core.serialize import S3Serializer

    original = S3Serializer._serialize_type_structure

    def _serialize_type_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        """An entry of a ListObjects(V2) answer (one per object, up to 1,000 per page) as moto builds it
        (:func:`_plain_listing_entry`): its members through moto's own serializers for their types, in the shape's
        order, without the attribute picker and the dispatch for each of the shape's nine members (the absent ones
        included). Anything else (an owner, another shape): moto's walk."""
        if key and shape.name == "Object" and _plain_listing_entry(value):
            members = shape.members
            wrapper: dict[str, Any] = {}
            for name, member in members.items():
                if name in value:
                    serialize = getattr(self, f"_serialize_type_{member.type_name}", self._default_serialize)
                    serialize(wrapper, value[name], member, name)
            self._default_serialize(serialized, wrapper, shape, key)
            return
        original(self, serialized, value, shape, key)

    S3Serializer._serialize_type_structure = _serialize_type_structure


def _patch_timestamp_strings() -> None:
    _require_moto("_patch_timestamp_strings")
    from moto.core.serialize import TimestampSerializer

    original = TimestampSerializer._convert_timestamp_to_str
    converted: dict[tuple[str, str], str] = {}

    def _convert_timestamp_to_str(self: Any, value: Any, timestamp_format: str) -> Any:
        """A timestamp that moto keeps as a string (an S3 object's LastModified, parsed again by dateutil for each
        object of each listing) converted once per string and format: the conversion depends on nothing else."""
        if type(value) is not str:
            return original(self, value, timestamp_format)
        memo = (value, timestamp_format)
        found = converted.get(memo)
        if found is None:
            if len(converted) >= _TIMESTAMP_MEMO:
                converted.clear()
            found = converted[memo] = original(self, value, timestamp_format)
        return found

    TimestampSerializer._convert_timestamp_to_str = _convert_timestamp_to_str


def _patch_firehose_quota() -> None:
    _require_moto("_patch_firehose_quota")
    from moto.firehose.models import DeliveryStream

    DeliveryStream.MAX_STREAMS_PER_REGION = 5000


def _patch_action_names() -> None:
    _require_moto("_patch_action_names")
    from moto.core import responses

    original = responses.method_names_from_class
    names: dict[Any, list[str]] = {}

    def method_names_from_class(clazz: Any) -> list[str]:
        """The function names of a response class (the actions it answers), listed once per class: moto listed every
        member of the class (``inspect.getmembers``, ~100 µs) on each request to find the action's method. The
        classes do not change once the patches are applied (before the first request). A copy, as moto's is new."""
        found = names.get(clazz)
        if found is None:
            found = names[clazz] = original(clazz)
        return list(found)

    responses.method_names_from_class = method_names_from_class


def _patch_random_strings() -> None:
    _require_moto("_patch_random_strings")
    from moto.moto_api._internal.moto_random import MotoRandom

    def get_random_string(self: Any, length: int = 20, include_digits: bool = True, lower_case: bool = False) -> str:
        """The same alphabet, length and case as moto's, drawn in one ``choices`` call instead of one ``choice`` per
        character (the 52-character request id of every response: ~40 µs of each request). Still from moto's own
        generator, so a seeded ``mock_random`` stays deterministic."""
        pool = string.ascii_letters + string.digits if include_digits else string.ascii_letters
        drawn = "".join(self.choices(pool, k=length))
        return drawn.lower() if lower_case else drawn

    MotoRandom.get_random_string = get_random_string


def _patch_flask_debug_files() -> None:
    _require_moto("_patch_flask_debug_files")
    from flask import debughelpers

    def attach_enctype_error_multidict(request: Any) -> None:
        """Nothing: moto's Flask apps run in debug mode (an unexpected error answers with its traceback), and in
        debug mode Flask built a new class for each request that is not a form upload (``request.files`` with a
        friendlier error for a browser form sent without ``enctype``): ~40 µs a request. A missing file key still
        raises KeyError, without that hint, which no AWS client needs."""

    debughelpers.attach_enctype_error_multidict = attach_enctype_error_multidict


def _patch_response_picker() -> None:
    _require_moto("_patch_response_picker")
    from moto.core.serialize import DEFAULT_ALIAS_PROVIDERS, XFormedAttributePicker
    from moto.core.utils import MISSING, get_value

    original = XFormedAttributePicker.__call__

    def __call__(self: Any, context: Any) -> Any:
        """A response member of a plain dict: the names moto tries for it listed once per member shape, not on each
        answer. moto builds one object per alias provider (six) per member of every answer, ~5 µs a member whether
        it is there or not (~40 members in a BatchWriteItem's answer, most of them absent). For a dict, the names
        depend only on the member's shape (its name, parent and serialization name) and key — the providers that
        read the object need a ``Meta`` class or a class name, and a dict's is ``dict`` — so the same names are
        tried in the same order, and the first one present is picked, as moto does. The names are kept on the shape
        object itself (services whose serializer builds its shapes per answer keep nothing longer than the answer).
        Objects, dict subclasses, response transformers and other alias providers keep moto's search."""
        obj = context.obj
        shape = context.shape
        if (
            type(obj) is not dict
            or shape is None
            or self.response_transformers
            or self.alias_providers is not DEFAULT_ALIAS_PROVIDERS
        ):
            return original(self, context)
        key = context.key
        parent = getattr(shape, "parent", None)
        known = shape.__dict__.get("_shoplake_picked")
        if known is None or known[0] is not parent or known[1] != key:
            known = (parent, key, tuple(self.get_possible_keys(context)))
            shape.__dict__["_shoplake_picked"] = known
        for name in known[2]:
            value = get_value(obj, name, MISSING)
            if value is not MISSING:
                return value
        return None

    XFormedAttributePicker.__call__ = __call__


def apply() -> None:
    _patch_kinesis()
    _patch_dynamodb_query()
    _patch_dynamodb_serializer()
    _patch_dynamodb_item_size()
    _patch_dynamodb_request_parser()
    _patch_dynamodb_projection()
    _patch_dynamodb_item_copy()
    _patch_dynamodb_filtered_query()
    _patch_dynamodb_sizes()
    _patch_dynamodb_size_cache()
    _patch_dynamodb_cast_value()
    _patch_dynamodb_segments()
    _patch_dynamodb_values()
    _patch_dynamodb_serializer_maps()
    _patch_backend_lookup()
    _patch_untracked_models()
    _patch_model_data()
    _patch_lambda_push()
    _patch_firehose_quota()
    _patch_firehose_batch_response()
    _patch_s3_listing_entries()
    _patch_timestamp_strings()
    _patch_action_names()
    _patch_random_strings()
    _patch_flask_debug_files()
    _patch_response_picker()
