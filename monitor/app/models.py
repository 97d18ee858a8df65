"""Stage 2 wiring: the blocks topic in, one merged view per model stream, incidents out.

`ModelProcessor.process` decodes a blocks-topic partition's records, hands each block to its model stream
and closes the slots the watermark has passed; alerts and rejects come back as values, as in stage 1.
"""

from __future__ import annotations

from typing import Any

from monitor.app.pipeline import BatchOutcome, StreamProcessor
from monitor.core.model import ModelStream
from monitor.core.profiles import ReferenceProfile
from monitor.core.state_codec import GROUP_PREFIX, encode_fields, read_fields, split_hot, stored_once
from monitor.core.types import Alert, RawRecord, Reject
from monitor.errors import DecodeError
from monitor.io.avro import BlockCodec
from monitor.settings import Settings

META_FIELD = "__meta__"
# What changes at every blocks message in a model stream's state, and its windows' closed blocks (`split_hot`).
STAGE2_HOT = [("features", "*", p) for p in ("totals", "open_clipped", "run", "count", "missing", "adwin",
                                              "page_hinkley", "warm")] + [("features", "*", "window", "open")] + [
    (p,) for p in ("partitions", "pending", "closed_slot", "slots", "cusum", "warm", "counts", "signals",
                   "incidents", "last_drift")]
SEGMENT_MARK = "#"  # "<model>/<stream>#<field>=<value>": a segment's view
STAGE2_BLOCKS = [("features", "*", "window", "closed")]


class ModelPartition:
    """Stage 2's state on one blocks-topic partition: the model streams whose blocks land there."""

    def __init__(self, processor: ModelProcessor, partition: int) -> None:
        self.processor = processor
        self.partition = partition
        self.streams: dict[str, ModelStream] = {}  # "<model>/<stream>" -> merged view, made on first block
        self.rejects = 0
        self.dirty: set[str] = set()  # streams changed since the last checkpoint: only they are encoded again
        self._encoded: dict[str, dict[str, bytes]] = {}  # stream -> its fields as last encoded

    def stream(self, key: str) -> ModelStream:
        """A stream's view (`<model>/<stream>`), or a segment's (`<model>/<stream>#<field>=<value>`)."""
        view = self.streams.get(key)
        if view is None:
            base, _, segment = key.partition(SEGMENT_MARK)
            proc = self.processor.stream_processors[base]
            expected = self.processor.input_partitions.get(proc.topic, 0)
            view = self.streams[key] = proc.new_model_stream(expected, segment or None)
            if proc.stream == "predictions" and not segment:
                model = proc.model.name
                view.explain = lambda: self._explain_inputs(model)
            if segment:
                view.stream_open = lambda: self._stream_open(base)
                view.stream_rates = lambda: self._stream_rates(base)
        return view

    def _stream_rates(self, base: str) -> dict[tuple[str, str], float]:
        view = self.streams.get(base)
        return dict(view.last_rates) if view is not None else {}

    def _stream_open(self, base: str) -> set[str]:
        view = self.streams.get(base)
        return view.open_fields() if view is not None else set()

    def _explain_inputs(self, model: str) -> tuple[dict[str, list[Any]], dict[str, float]]:
        """The model's features stream's last drift values (this partition holds all of the model's streams:
        the blocks topic is keyed by model) and the features' importance: the reference's, then the model's
        `importance:` map."""
        features = self.streams.get(f"{model}/features")
        proc = self.processor.stream_processors.get(f"{model}/features")
        reference = proc.reference if proc is not None else None
        importance = {**((reference.importance or {}) if reference is not None else {}),
                      **(proc.model.importance if proc is not None else {})}
        return (dict(features.last_drift) if features is not None else {}), importance

    def to_fields(self) -> dict[str, bytes]:
        """Every stream's fields and the partition's meta; a stream's are encoded again only when it changed."""
        for key in sorted(self.dirty | (set(self.streams) - set(self._encoded))):
            if key in self.streams:
                state = {key: self.streams[key].to_state()}
                # The window's slots slide: each slot's entry is stored once (see `Packed`).
                state[key]["slots"] = [stored_once(slot, min_bytes=16) for slot in state[key].get("slots", [])]
                state = split_hot(state, STAGE2_HOT, f"{GROUP_PREFIX}{key}/hot")
                self._encoded[key] = encode_fields(split_hot(state, STAGE2_BLOCKS, f"{GROUP_PREFIX}{key}/blocks"))
        self.dirty = set()
        out = encode_fields({META_FIELD: {"rejects": self.rejects, "streams": sorted(self.streams)}})
        for key in self.streams:
            out.update(self._encoded.get(key, {}))
        return out

    def load_fields(self, fields: dict[str, bytes]) -> None:
        meta = read_fields(fields, [META_FIELD])[META_FIELD]
        self.rejects = int(meta["rejects"])
        states = read_fields(fields, [k for k in meta["streams"]
                                      if k.partition(SEGMENT_MARK)[0] in self.processor.stream_processors])
        for key, state in states.items():
            self.stream(key).load_state(state)
            self.dirty.add(key)


class ModelProcessor:
    """The blocks topic: merge each model stream's blocks from all partitions, raise one incident per problem."""

    stream = "blocks"

    def __init__(self, settings: Settings, stream_processors: dict[str, StreamProcessor]) -> None:
        self.settings = settings
        self.topic = settings.blocks_topic
        self.codec = BlockCodec()
        # "<model>/<stream>" -> the stage-1 processor that knows the stream's fields, checks and reference
        self.stream_processors = {f"{p.model.name}/{p.stream}": p for p in stream_processors.values()}
        self.input_partitions: dict[str, int] = {}  # input topic -> partition count, from the broker's metadata

    def new_partition(self, partition: int, _topic_partitions: int = 1) -> ModelPartition:
        return ModelPartition(self, partition)

    def set_reference(self, model: str, reference: ReferenceProfile | None) -> None:
        for key, proc in self.stream_processors.items():
            if key.split("/", 1)[0] == model:
                proc.set_reference(reference)

    def reference_version(self, model: str) -> str | None:
        versions = [p.reference_version for k, p in self.stream_processors.items() if k.split("/", 1)[0] == model]
        return versions[0] if versions else None

    def process(self, part: ModelPartition, records: list[RawRecord]) -> BatchOutcome:
        """Apply one blocks-topic partition's records (offset order); close what the watermark passed."""
        alerts: list[Alert] = []
        rejects: list[Reject] = []
        touched: set[str] = set()
        for rec in records:
            try:
                blocks = self.codec.decode(rec.value)
                keys = [f"{b['model']}/{b['stream']}" + (SEGMENT_MARK + b["segment"] if b.get("segment") else "")
                        for b in blocks]
                unknown = sorted({k for k in keys if k.partition(SEGMENT_MARK)[0] not in self.stream_processors})
                if unknown:
                    rejects.append(Reject(rec, "unknown_model", "LimitExceeded",
                                          f"no model stream {', '.join(unknown)} in this config"))
                    continue
                # Every block's numeric values are checked before any is applied: a bad message changes nothing.
                parsed = [part.stream(k).parse(b) if int(b["seq"]) >= 0 else None
                          for k, b in zip(keys, blocks, strict=True)]
            except DecodeError as exc:
                rejects.append(Reject(rec, exc.reason, type(exc.__cause__ or exc).__name__, str(exc)))
                continue
            for key, block, values in zip(keys, blocks, parsed, strict=True):
                alerts += part.stream(key).add(block, values)
                touched.add(key)
        for key in sorted({k.partition(SEGMENT_MARK)[0] for k in touched}):
            view = part.streams.get(key)
            if view is None:
                continue
            segments = [(k, part.streams[k]) for k in sorted(part.streams) if k.startswith(key + SEGMENT_MARK)]

            def follow(slot: int, segments: list[tuple[str, ModelStream]] = segments) -> list[Alert]:
                """Its segments close each slot it closes, right after it (they compare with it as it was)."""
                out: list[Alert] = []
                for seg_key, seg in segments:
                    before = seg.closed_slot
                    out += seg.follow(slot)
                    if seg.closed_slot != before:
                        touched.add(seg_key)
                return out

            alerts += view.advance(follow if segments else None)
        part.dirty |= touched
        part.rejects += len(rejects)
        valid = len(records) - len(rejects)
        return BatchOutcome(alerts, rejects, valid, records[-1].offset + 1 if records else -1)

    def rebuild(self, part: ModelPartition, model: str) -> None:
        """After a reference change: new views for `model`, keeping counts and incidents (windows restart)."""
        for key in [k for k in part.streams if k.split("/", 1)[0] == model]:
            state = read_fields(encode_fields({key: part.streams[key].to_state()}))[key]
            del part.streams[key]
            part.stream(key).load_state(state)
            part.dirty.add(key)
