"""Example agents from the seed, each runnable with ``python manage.py run_agent agents.examples.<module>``.

Their outputs are computed from their inputs. ``MASP_EXAMPLE_DELAY`` (seconds,
default 0.05) adds the seed's simulated processing time to every call.
"""
