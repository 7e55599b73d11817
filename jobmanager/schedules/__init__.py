"""Schedules: triggers (once, every, cron with Vixie/cronie semantics), declarations, the schedules
file, and firing exactly once."""
