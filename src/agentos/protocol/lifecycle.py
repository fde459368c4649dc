"""An agent's life as the wire tells it: its status in LIST and the ``agent.*`` topics of
``kernel.events`` (docs/processes.md, "Lifecycle").

One home for both, below the kernel and the client alike: the process service publishes
these topics, the supervisor, the THINK gateway, messaging and telemetry listen to them,
and the CLI (``agentos up``, ``logs -f``) and the dashboard read them from the wire.
"""
from __future__ import annotations


class Status:
    """An agent's status as LIST reports it."""

    RUNNING = "running"
    #: Ended on its own with exit code 0.
    EXITED = "exited"
    #: Ended on its own with a non-zero code, or died of a signal nobody in agentos sent; also
    #: an agent the supervisor gave up restarting (``Topic.GIVEN_UP``).
    FAILED = "failed"
    #: Ended after KILL, its parent agent ending, or the kernel shutting down.
    KILLED = "killed"
    #: The cgroup's OOM killer took it (memory limit).
    OOM_KILLED = "oom_killed"
    #: Killed by the kernel at its ``timeout`` or ``idle_timeout`` (``reason`` says which).
    TIMED_OUT = "timed_out"
    #: Shown (never stored) for a running agent that PAUSE froze, itself or through an ancestor.
    PAUSED = "paused"
    #: It was running when its kernel died: a later kernel found it gone, exit code unknown.
    LOST = "lost"
    #: Shown (never stored) for an agent waiting for a cluster node to take it (docs/cluster.md).
    PENDING = "pending"

    #: Its process is there (LIST's ``status: running`` selects both).
    LIVE = frozenset({RUNNING, PAUSED})
    #: Endings nobody asked for: its own code, its limits, its timeout. Not KILLED (KILL, its
    #: parent, shutdown) nor LOST (its kernel died): a restart policy answers only these.
    SELF_ENDED = frozenset({EXITED, FAILED, OOM_KILLED, TIMED_OUT})
    #: Every status of an agent in the process table (all LIST shows but ``pending``).
    ALL = (RUNNING, PAUSED, EXITED, FAILED, KILLED, OOM_KILLED, TIMED_OUT, LOST)


class Topic:
    """The ``agent.*`` topics the kernel publishes on ``kernel.events``."""

    STARTED = "agent.started"
    #: It called READY (what ``depends_on`` and ``agentos up`` wait for).
    READY = "agent.ready"
    #: PAUSE froze it and its descendants (``frozen``); RESUME thawed those no other PAUSE holds.
    PAUSED = "agent.paused"
    RESUMED = "agent.resumed"
    EXITED = "agent.exited"
    KILLED = "agent.killed"
    OOM_KILLED = "agent.oom_killed"
    #: Published by the next kernel, at its start, for an agent its predecessor left running.
    LOST = "agent.lost"
    #: The next kernel started it again (its restart policy) under a new id (``previous_id``).
    RESTORED = "agent.restored"
    #: The supervisor started it again (its restart policy), under a new id.
    RESTARTED = "agent.restarted"
    #: The supervisor stopped restarting it (restarts used up in the window, or a restart or a
    #: restore failed): no process of it is coming. It follows the ending it answers; LIST then
    #: shows the agent ``failed`` whatever that ending was.
    GIVEN_UP = "agent.given_up"


#: The topic published when an agent ends with each status; a timed-out agent ended on the
#: kernel's own terms, as a failure: ``agent.exited`` with its status.
END_TOPICS = {Status.EXITED: Topic.EXITED, Status.FAILED: Topic.EXITED,
              Status.KILLED: Topic.KILLED, Status.OOM_KILLED: Topic.OOM_KILLED,
              Status.TIMED_OUT: Topic.EXITED, Status.LOST: Topic.LOST}
#: The topics of an agent's process ending: each ending publishes exactly one of them.
ENDED_TOPICS = frozenset(END_TOPICS.values())
#: The topics that can carry an ending nobody asked for (``Status.SELF_ENDED``).
SELF_ENDED_TOPICS = frozenset(END_TOPICS[status] for status in Status.SELF_ENDED)
