"""Several nodes, one service: the join protocol (docs/design/ha.md §Joining). Pure code, no I/O."""
