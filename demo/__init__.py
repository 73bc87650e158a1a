"""``manage.py demo``: the seed's scenarios end to end, through the real API and processes."""
