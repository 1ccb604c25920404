"""Pure decisions of the router: values in, values out, no Kafka, no I/O."""
