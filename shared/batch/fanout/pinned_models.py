"""The models of fanned-out jobs, as pinned when each job was planned.

The planner copies the model blob's text to ``jobs/{id}/model-{token}.txt`` and records its
version; chunks parse that copy (never the live model blob, which may have moved on), once
per process, so a model swapped while a job runs cannot mix versions in one output.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.batch.fanout.plan import PinnedModel
from shared.errors import InvalidModel, InvalidPayload
from shared.models.model import LoadedModel, parse_model
from shared.storage import BlobTooLarge, read_at_most

PINNED_MODELS = 4  # pinned models kept per process (least recently used dropped)


class PinnedModels:
    """The pinned models parsed in this process, the last few kept."""

    def __init__(self, container: ContainerClient, max_bytes: int) -> None:
        self.container = container
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._model_locks: dict[str, threading.Lock] = {}

    def get(self, ref: PinnedModel) -> LoadedModel:
        """The job's pinned model, parsed from its job-scoped copy once per process."""
        key = ref.copy
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            lock = self._model_locks.setdefault(key, threading.Lock())
        with lock:  # one download per process, however many chunks ask at once
            with self._lock:
                model = self._models.get(key)
            if model is not None:
                return model
            try:
                data = read_at_most(self.container.get_blob_client(key), self.max_bytes)
            except ResourceNotFoundError:
                raise InvalidPayload(f"the job's pinned model copy {key!r} is missing",
                                     code="pinned_model_missing") from None
            except BlobTooLarge as exc:
                raise InvalidModel(f"the job's pinned model copy: {exc}") from None
            model = parse_model(data, name=ref.name, path=ref.path, version=ref.version,
                                last_modified=None)
            with self._lock:
                self._models[key] = model
                self._model_locks.pop(key, None)
                while len(self._models) > PINNED_MODELS:
                    self._models.popitem(last=False)
        return model
