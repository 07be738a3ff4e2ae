"""Batching of concurrent requests: one tower run and one index search for many users.

A :class:`Batcher` runs as a task on the server's event loop. It takes the first waiting
request, gathers more until it holds ``max_batch_size`` or ``max_wait`` seconds have passed,
and answers them all with one
:meth:`~lit_matching.serving.retriever.Retriever.recommend_requests` call in a worker thread
(the event loop keeps accepting requests meanwhile). When that call fails, each request of the
batch is answered alone, so one bad request gets its own error and the others their answers.
Nothing a request does stops the batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from lit_matching.serving.requests import Recommendation, UserRequest
from lit_matching.serving.retriever import Retriever

__all__ = ["Batcher", "answer_each"]

_log = logging.getLogger(__name__)

_Waiting = tuple[UserRequest, "asyncio.Future[Recommendation]"]


def answer_each(
    retriever: Retriever, requests: Sequence[UserRequest]
) -> list[Recommendation | Exception]:
    """Answers to ``requests``: together if they can be, else each alone, with its own error.

    Example:
        >>> import numpy as np
        >>> vectors = np.eye(2, dtype=np.float32)
        >>> retriever = Retriever(vectors, vectors, ["a", "b"], [1, 2], "dot")
        >>> good, bad = answer_each(retriever, [UserRequest("a", k=1), UserRequest("b", k=0)])
        >>> good.item_ids, type(bad).__name__
        ([1], 'ValueError')
    """
    try:
        return list(retriever.recommend_requests(requests))
    except Exception:
        if len(requests) == 1:
            raise
    found: list[Recommendation | Exception] = []
    for request in requests:
        try:
            found.append(retriever.recommend_requests([request])[0])
        except Exception as error:
            found.append(error)
    return found


class Batcher:
    """Answers concurrent requests in batches (see the module docstring).

    Args:
        retriever: Returns the retriever to answer with; read once per batch, so a retriever
            swapped meanwhile answers the next batch, not the one under way.
        max_batch_size: Most requests in one batch.
        max_wait: Longest (seconds) the first request of a batch waits for others.
    """

    def __init__(
        self, retriever: Callable[[], Retriever], max_batch_size: int = 64, max_wait: float = 0.002
    ):
        if max_batch_size < 1 or max_wait < 0:
            raise ValueError(
                f"max_batch_size must be >= 1 and max_wait >= 0, got {max_batch_size} and "
                f"{max_wait}"
            )
        self.retriever = retriever
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._queue: asyncio.Queue[_Waiting] | None = None
        self.batches = 0  # batches answered (how many requests each held is not kept)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the batcher task while the context is open (the server's lifespan)."""
        self._queue = asyncio.Queue()
        task = asyncio.create_task(self._run(), name="lit-matching batcher")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._queue = None

    async def submit(self, request: UserRequest) -> Recommendation:
        """The answer to ``request``, from the batch it joins.

        Raises:
            Exception: What answering this request alone raised (``ValueError`` for a bad
                request).
            RuntimeError: The batcher is not running.
        """
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future[Recommendation] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            try:
                await self._answer(batch)
            except Exception as error:  # a bug here must not stop the server answering
                _log.exception("batch of %d requests failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)

    async def _gather(self) -> list[_Waiting]:
        assert self._queue is not None
        queue = self._queue
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch_size:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _answer(self, batch: list[_Waiting]) -> None:
        retriever = self.retriever()
        requests = [request for request, _ in batch]
        try:
            found = await asyncio.to_thread(answer_each, retriever, requests)
        except Exception as error:  # a batch of one: its own error
            found = [error]
        self.batches += 1
        for (_, future), result in zip(batch, found, strict=True):
            if future.done():  # the client went away
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
