"""Explicit lifecycles: an enum of states, an enum of events and one transition table.

The stream (L{shared.protocol.mux}), the bridge's half-close
(L{shared.bridge}), the channel hello (L{shared.protocol.channel}) and the
console's Kubernetes connections each keep their lifecycle in a
L{Lifecycle}: the table says, for every state, which events may happen and
where they lead.  An event the table does not list for the current state is
a bug (or, for events a peer causes, a protocol violation the caller turns
into its error): L{Lifecycle.fire} raises L{IllegalTransition} instead of
drifting into a combination of flags nobody designed.

A table is plain data, so the tests can walk it exhaustively (every state
times every event) against the object that owns it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, TypeVar

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class IllegalTransition(RuntimeError):
    """An event that the lifecycle's table does not allow in its current state."""

    def __init__(self, machine: str, state: enum.Enum, event: enum.Enum) -> None:
        super().__init__(f"{machine}: event {event.name} is not allowed in state {state.name}")
        self.machine = machine
        self.state = state
        self.event = event


class Transitions(Generic[S, E]):
    """The transition table of one kind of lifecycle (checked when it is built).

    @param name: what the lifecycle belongs to, for error messages.
    @param table: C{{state: {event: next state}}}; a state absent from the
        table, or mapped to an empty dict, is final.
    """

    def __init__(
        self,
        name: str,
        states: type[S],
        events: type[E],
        table: Mapping[S, Mapping[E, S]],
    ) -> None:
        for state, moves in table.items():
            if not isinstance(state, states):
                raise TypeError(f"{name}: {state!r} is not a {states.__name__}")
            for event, target in moves.items():
                if not isinstance(event, events) or not isinstance(target, states):
                    raise TypeError(f"{name}: bad transition {state!r} --{event!r}--> {target!r}")
        self.name = name
        self.states = states
        self.events = events
        self._table: dict[S, dict[E, S]] = {state: dict(table.get(state, {})) for state in states}
        # The same table keyed by identity, for the data path: enum members are
        # singletons, and Enum's own __hash__ is Python code (hashing a member per
        # lookup cost more than the rest of a move, several moves per connection).
        self._moves: dict[int, dict[int, S]] = {
            id(state): {id(event): target for event, target in moves.items()}
            for state, moves in self._table.items()
        }

    def target(self, state: S, event: E) -> S | None:
        """Where C{event} leads from C{state}, or C{None} if it is not allowed there."""
        return self._moves[id(state)].get(id(event))

    def allowed(self, state: S) -> frozenset[E]:
        """The events allowed in C{state}."""
        return frozenset(self._table[state])

    def allowing(self, event: E) -> frozenset[S]:
        """The states in which C{event} is allowed (for checks on the data path)."""
        return frozenset(state for state, moves in self._table.items() if event in moves)

    def start(self, initial: S) -> Lifecycle[S, E]:
        """A lifecycle of this kind, in state C{initial}."""
        return Lifecycle(self, initial)


class Lifecycle(Generic[S, E]):
    """The current state of one object, moved only by the events its table allows.

    @ivar state: the current state.  Read it freely (it is a plain attribute,
        since the data path reads it per frame); only L{fire} changes it.
    """

    __slots__ = ("_moves", "state", "transitions")

    def __init__(self, transitions: Transitions[S, E], initial: S) -> None:
        if not isinstance(initial, transitions.states):
            raise TypeError(f"{transitions.name}: {initial!r} is not a state")
        self.transitions = transitions
        self.state = initial
        # the table's identity-keyed moves, looked up here without a call per move
        self._moves = transitions._moves

    def allows(self, event: E) -> bool:
        """Whether C{event} may happen now."""
        return self._moves[id(self.state)].get(id(event)) is not None

    def fire(self, event: E) -> S:
        """Move on C{event} and return the new state; L{IllegalTransition} if not allowed."""
        target = self._moves[id(self.state)].get(id(event))
        if target is None:
            raise IllegalTransition(self.transitions.name, self.state, event)
        self.state = target
        return target

    def __repr__(self) -> str:
        return f"<{self.transitions.name} {self.state.name}>"


__all__ = ["IllegalTransition", "Lifecycle", "Transitions"]
