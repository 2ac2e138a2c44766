"""The models one worker serves, and how every worker agrees on them.

The store pins the model versions the server last loaded successfully. A worker starts on the
pinned versions; a pinned version that no longer loads, or a server with no pin yet, falls back
per model to the newest exported version that loads (a rejected newer version is skipped with a
warning and never stops the worker; a restarted worker once failed on a corrupted version and
uvicorn stopped every worker). An admin reload loads the newest versions, and only if all of
them load pins them and starts a new generation; the other workers follow the pin.

Requests lease the set they score with; a replaced set is closed (its batchers stopped) only
once its last lease is returned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.features.transforms import Features
from serving.models import LoadOptions, ModelLoadError, ModelSet, load_model_set
from serving.store_rows import StoreError
from serving.stores import Store

log = logging.getLogger(__name__)


class ModelPool:
    def __init__(
        self,
        registry: Path,
        opts: LoadOptions,
        store: Store,
        default: str | None,
        warmup: Features,
        check: Callable[[ModelSet], None],
    ):
        self.registry, self.opts, self.store = registry, opts, store
        self.default, self.warmup, self.check = default, warmup, check
        pinned = store.pinned_models()
        self.current = self._load(pinned, lenient=True)
        if pinned is None:
            store.publish_models(self.current.versions(), bump=False)
        elif any(pinned.get(k, v) != v for k, v in self.current.versions().items()):
            log.warning(
                "serving %s, not the pinned %s (a pinned version failed to load)",
                self.current.versions(),
                pinned,
            )
        self.generation = store.generation()
        self._swap_lock = threading.Lock()  # guards ``current``
        self._load_lock = threading.Lock()  # one load at a time

    def _load(self, pinned: dict[str, str] | None, lenient: bool) -> ModelSet:
        new = load_model_set(
            self.registry, self.opts, self.default, self.warmup, pinned=pinned, lenient=lenient
        )
        try:
            self.check(new)
        except ModelLoadError:
            new.close()
            raise
        return new

    @contextmanager
    def lease(self) -> Iterator[ModelSet]:
        """The current set, kept open until the caller is done with it."""
        with self._swap_lock:
            models = self.current
            models.acquire()
        try:
            yield models
        finally:
            models.release()

    def versions(self) -> dict[str, str]:
        return self.current.versions()

    def reload(self) -> ModelSet:
        """Load the newest exported versions; pin them for every worker only if all load.
        Raises ``ModelLoadError`` (the old set keeps serving) or ``StoreError``."""
        with self._load_lock:
            new = self._load(None, lenient=False)
            try:
                gen = self.store.publish_models(new.versions(), bump=True)
            except StoreError:
                new.close()
                raise
            self._swap(new, gen)
        log.info("models reloaded (generation %d): %s", gen, new.versions())
        return new

    def follow(self) -> None:
        """Load the pinned versions when another worker started a new generation."""
        gen = self.store.generation()
        if gen == self.generation:
            return
        with self._load_lock:
            if gen == self.generation:
                return
            try:
                new = self._load(self.store.pinned_models(), lenient=False)
            except ModelLoadError as e:  # keep serving the old ones; /v1/models shows the skew
                log.error("generation %d: this worker cannot load the pinned models: %s", gen, e)
                self.generation = gen
                return
            self._swap(new, gen)

    def _swap(self, new: ModelSet, generation: int) -> None:
        with self._swap_lock:
            old, self.current = self.current, new
            self.generation = generation
        old.retire()

    def close(self) -> None:
        self.current.retire()
