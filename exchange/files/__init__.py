"""File and folder resources: plan against the manifest, pull once, push to each subscriber.

Steps (each a plain function taking ``(ws, run_id)``, like the table pipeline):
``plan_files`` → ``pull`` → (tabular files: ``to_table`` → validate → load) → ``push`` per
file subscriber → ``finish``.
"""
