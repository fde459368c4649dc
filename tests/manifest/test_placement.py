"""``agents.<name>.placement`` (docs/cluster.md): checked as a kernel with a cluster checks it, each
error at its line; a placement group sized by its members' replicas, and its members held to one
reservation."""
from __future__ import annotations

FIX_NAME = "use letters, digits, '_', '.', '/' and '-', starting with a letter or digit"
SAME = ("every member of a group reserves the same (limits.memory, placement cpus, gpus, resources), with the "
        "same labels and strategy")


def test_a_group_is_sized_by_its_members_replicas_and_sent_with_each(valid) -> None:
    manifest = valid("""\
        agents:
          shard:
            script: agent.py
            replicas: 2
            placement: {labels: {pool: agents}, group: shards, strategy: strict-spread}
          spare:
            script: agent.py
            placement: {labels: {pool: agents}, group: shards, strategy: strict-spread}
          hub:
            script: agent.py
            placement: {group: hub, cpus: 0.5}
          alone:
            script: agent.py
            placement: {labels: {pool: agents}}
        """)
    wires = {name: spec.to_spawn_request(name)["placement"]
             for spec in manifest.agents for name in spec.instance_names()}
    shards = {"name": "shards", "size": 3, "strategy": "strict-spread"}
    assert wires == {"shard-1": {"labels": {"pool": "agents"}, "group": shards},
                     "shard-2": {"labels": {"pool": "agents"}, "group": shards},
                     "spare": {"labels": {"pool": "agents"}, "group": shards},
                     # Ray's default strategy.
                     "hub": {"cpus": 0.5, "group": {"name": "hub", "size": 1, "strategy": "pack"}},
                     "alone": {"labels": {"pool": "agents"}}}


def test_members_that_reserve_differently_are_named_with_the_first_members_line(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            placement: {group: g, strategy: spread}
          b:
            script: agent.py
            limits: {memory: 1Gi}
            placement: {group: g, strategy: spread}
          c:
            script: agent.py
            placement: {group: g, strategy: pack}
          d:
            script: agent.py
            placement: {group: g, strategy: spread, labels: {pool: agents}}
        """) == [
        (8, 24, "agents.b.placement.group: agent 'b' asks group 'g' for limits.memory 1024Mi, agent 'a' (line 4) "
         "for 512Mi", SAME),
        (11, 24, "agents.c.placement.group: agent 'c' asks group 'g' for strategy 'pack', agent 'a' (line 4) "
         "for 'spread'", SAME),
        (14, 24, "agents.d.placement.group: agent 'd' asks group 'g' for labels {'pool': 'agents'}, agent 'a' "
         "(line 4) for {}", SAME)]


def test_a_member_must_reserve_something_for_its_bundle(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            limits: {memory: unlimited}
            placement: {group: g}
        """) == [
        (5, 24, "agents.a.placement.group: a member of a group reserves a bundle, and agent 'a' reserves nothing",
         "set its limits.memory (not unlimited), or placement cpus, gpus or resources")]


def test_labels_resources_and_group_names_are_checked_where_written(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            placement:
              labels: {zone: 1, "no spaces": x}
              resources: {slots: many, gpu-ish: -1}
              group: "a group"
          b:
            script: agent.py
            placement: {strategy: strict-pack}
        """) == [
        (5, 16, "agents.a.placement.labels.zone: 1 is not a valid label value", f"{FIX_NAME}; quote a number ('1')"),
        (5, 25, "agents.a.placement.labels: 'no spaces' is not a valid label name", FIX_NAME),
        (6, 19, "agents.a.placement.resources.slots: expected an amount from 0 to 1000000, got 'many'",
         "write a number, e.g. agent_slots: 1"),
        (6, 32, "agents.a.placement.resources.gpu-ish: expected an amount from 0 to 1000000, got -1",
         "write a number, e.g. agent_slots: 1"),
        (7, 14, "agents.a.placement.group: 'a group' is not a valid group name", FIX_NAME),
        (10, 17, "agents.b.placement.strategy: has no effect without group",
         "name the group its members share, or remove strategy")]
