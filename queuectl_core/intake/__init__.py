"""Taking jobs in: user input turned into validated jobs, one at a time or by the million."""
