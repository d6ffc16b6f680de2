"""Powertools Logger, Tracer and Metrics: created once, shared by the handlers and the logic."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "granulemap"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="granulemap", service=SERVICE)
