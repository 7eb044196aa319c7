"""The merge verb: plan and stream a merge (``run``), sequential OPCM merges (``sequential``)."""

__all__: list[str] = []  # run (plan, stream, replay) and sequential (OPCM) load torch: import them directly
