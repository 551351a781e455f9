"""Rollout: per-version metrics, the statistics and guardrails that judge a candidate, what
happens when one fires, the canary driver, and actuators that change flags at their source.

Nothing here is on the request path except recording a call or an outcome.
"""
