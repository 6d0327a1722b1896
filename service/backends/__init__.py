"""PostgreSQL and Redis: the clients (postgres.py, redis.py, replica.py) and the breakers that
remember a backend that stopped answering (breaker.py). What a process holds of them is
service/process.py's `Backends`."""
