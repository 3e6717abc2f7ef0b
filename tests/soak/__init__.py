"""The fault soak: a workload, a nemesis, a history checker, one engine.

- `history`: the record of one client operation, and how a gRPC error is
  classified (ok, definite failure, indeterminate);
- `workload`: writers and readers in their own process, over etcd's gRPC API
  with a `[[users]]` certificate, failing over across the etcd servers file;
- `probe`: the engine's own view of the cluster (member list, leader, health);
- `nemesis`: the faults, each a short two-phase step (begin, end);
- `engine`: runs a scenario (a list of steps), waits for steady after each;
- `checker` and `figures`: pure functions over the recorded history.

`tests/test_soak.py` runs a short scenario; `bench/soak.py` a long seeded one.
See docs/soak.md.
"""
