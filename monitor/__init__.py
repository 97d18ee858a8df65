"""model-monitor: a Kafka streaming monitor for machine-learning models in production.

Tails feature and prediction topics, checks data quality, runs online drift detectors, keeps state in Redis.
"""

__version__ = "0.1.0"
