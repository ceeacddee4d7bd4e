"""The contract between the agent and the collector: Kafka records, log fields, index layout.

Data lives in files beside this module (log_fields.yaml, elasticsearch/*.json) and is described
in schemas/README.md; the modules here load it. Neither tier imports the other, both import this.
"""
