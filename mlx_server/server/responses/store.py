"""Responses kept for `previous_response_id` and `GET /v1/responses/{id}`: in memory, the most
recent `capacity` of them, and only those created with `store: true`."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from mlx_server.server.responses.protocol import ResponseObject

CAPACITY = 256


@dataclass(frozen=True)
class StoredResponse:
    response: ResponseObject
    # The whole conversation up to and including this response's output, as chat messages,
    # without `instructions` (which, as OpenAI documents, a next turn does not inherit).
    messages: list[dict[str, Any]]


class ResponseStore:
    """A least-recently-used map from response id to `StoredResponse`."""

    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    def get(self, response_id: str) -> StoredResponse | None:
        item = self._items.get(response_id)
        if item is not None:
            self._items.move_to_end(response_id)
        return item

    def put(self, item: StoredResponse) -> None:
        self._items[item.response.id] = item
        self._items.move_to_end(item.response.id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None

    def __len__(self) -> int:
        return len(self._items)


def response_store(request: Request) -> ResponseStore:
    """The app's store, made on first use."""
    state = request.app.state
    if getattr(state, "responses", None) is None:
        state.responses = ResponseStore()
    store: ResponseStore = state.responses
    return store
