# Target tracking on three signals; the service scales out when any of them is above its target
# and in only when all of them are below.

resource "aws_appautoscaling_target" "realtime" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.realtime.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
  tags               = local.tags
}

locals {
  # Scaling in closes WebSockets (the providers reconnect elsewhere), so it is slower than out.
  scale_in_cooldown_secs  = 300
  scale_out_cooldown_secs = 60
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${local.name}-realtime-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.realtime.service_namespace
  resource_id        = aws_appautoscaling_target.realtime.resource_id
  scalable_dimension = aws_appautoscaling_target.realtime.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = local.scale_in_cooldown_secs
    scale_out_cooldown = local.scale_out_cooldown_secs

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "memory" {
  name               = "${local.name}-realtime-memory"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.realtime.service_namespace
  resource_id        = aws_appautoscaling_target.realtime.resource_id
  scalable_dimension = aws_appautoscaling_target.realtime.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.memory_target_percent
    scale_in_cooldown  = local.scale_in_cooldown_secs
    scale_out_cooldown = local.scale_out_cooldown_secs

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageMemoryUtilization"
    }
  }
}

# Every task publishes its open WebSockets every cloudwatch.interval_secs (60 s) under the same
# namespace, name and dimensions (set in the task definition from the same locals), so the
# Average statistic is connections per task.
resource "aws_appautoscaling_policy" "connections" {
  name               = "${local.name}-realtime-connections"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.realtime.service_namespace
  resource_id        = aws_appautoscaling_target.realtime.resource_id
  scalable_dimension = aws_appautoscaling_target.realtime.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.connections_per_task
    scale_in_cooldown  = local.scale_in_cooldown_secs
    scale_out_cooldown = local.scale_out_cooldown_secs

    customized_metric_specification {
      namespace   = local.metric_namespace
      metric_name = local.metric_name
      # No unit: a unit filter that differs from the published one would match no data.
      statistic = "Average"

      dynamic "dimensions" {
        for_each = local.metric_dimensions

        content {
          name  = dimensions.key
          value = dimensions.value
        }
      }
    }
  }
}
