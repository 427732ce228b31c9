"""jobqueue's Redis engine: producer, worker, reaper and the Lua transitions."""

from engine.app import App, JobContext, Retry, RetryPolicy
from engine.errors import (
    Backpressure,
    ConfigError,
    EngineError,
    InvalidName,
    InvalidPayload,
    JobExists,
    JobNotFound,
    LeaseLost,
    QueueFull,
    UnknownTask,
)
from engine.queue import JobQueue, JobSpec, QueueStats
from engine.settings import Settings, load_settings
from engine.worker import Worker

__all__ = [
    "App",
    "Backpressure",
    "ConfigError",
    "EngineError",
    "InvalidName",
    "InvalidPayload",
    "JobContext",
    "JobExists",
    "JobNotFound",
    "JobQueue",
    "JobSpec",
    "LeaseLost",
    "QueueFull",
    "QueueStats",
    "Retry",
    "RetryPolicy",
    "Settings",
    "UnknownTask",
    "Worker",
    "load_settings",
]
