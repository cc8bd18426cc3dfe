# Every task publishes MemoryPressure (its memory budget's use in percent, config
# cloudwatch.memory_metric_name) beside ActiveConnections, under the same namespace and
# dimensions, so the Maximum statistic is the fullest task. Scaling does not follow it (the
# memory target-tracking policy follows the container's memory, which the budget keeps below the
# limit): a task staying at 90 % refuses to open documents, which editors notice, so a person
# should look. Prometheus has the finer alerts (ZediMemoryBudgetHigh, ZediMemoryShedding).
resource "aws_cloudwatch_metric_alarm" "memory_pressure" {
  count = var.memory_pressure_alarm_percent == null ? 0 : 1

  alarm_name        = "${local.name}-realtime-memory-pressure"
  alarm_description = "A zedi-sync task's memory budget has been above ${var.memory_pressure_alarm_percent} % for 3 of the last 5 minutes: it refuses new WebSockets (80 %) and documents (90 %), and at 100 % closes the sockets that hold the most."
  namespace         = local.metric_namespace
  metric_name       = local.memory_metric_name
  dimensions        = local.metric_dimensions
  statistic         = "Maximum"
  period            = 60

  comparison_operator = "GreaterThanThreshold"
  threshold           = var.memory_pressure_alarm_percent
  evaluation_periods  = 5
  datapoints_to_alarm = 3

  # No datapoints means no task publishing, which the service's own health covers.
  treat_missing_data = "notBreaching"

  alarm_actions = var.alarm_actions
  ok_actions    = var.alarm_actions
  tags          = local.tags
}
