"""The job: its model, ids, times and lifecycle (every transition a job can make, decided once)."""
