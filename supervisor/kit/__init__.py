"""The deployment kit: `start-all init`, `check`, `migrate`, `schedules` and the templates."""
