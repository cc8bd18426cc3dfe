output "alb_dns_name" {
  description = "DNS name of the ALB (CNAME / alias target of the wss:// host name)."
  value       = aws_lb.this.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the ALB, for alias records."
  value       = aws_lb.this.zone_id
}

output "url" {
  description = "WebSocket URL for the providers."
  value       = var.domain_name == null ? "wss://${aws_lb.this.dns_name}" : "wss://${var.domain_name}"
}

output "cluster_name" {
  description = "ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "ECS service (also the ServiceName dimension of ActiveConnections)."
  value       = aws_ecs_service.realtime.name
}

output "task_definition_family" {
  description = "Task definition family (deploys register new revisions of it)."
  value       = aws_ecs_task_definition.realtime.family
}

output "log_group_name" {
  description = "CloudWatch log group of the daemon (JSON lines)."
  value       = aws_cloudwatch_log_group.this.name
}

output "metric_namespace" {
  description = "CloudWatch namespace of ActiveConnections: {project}/{environment}."
  value       = local.metric_namespace
}

output "metric_name" {
  description = "CloudWatch metric the connections policy tracks."
  value       = local.metric_name
}

output "metric_dimensions" {
  description = "Dimensions of ActiveConnections, as the daemon's ZEDI__CLOUDWATCH__DIMENSIONS."
  value       = local.metric_dimensions_env
}

output "task_security_group_id" {
  description = "Security group of the tasks."
  value       = aws_security_group.task.id
}

output "alb_security_group_id" {
  description = "Security group of the ALB."
  value       = aws_security_group.alb.id
}

output "task_role_arn" {
  description = "Role the daemon runs with (PutMetricData on its namespace only)."
  value       = aws_iam_role.task.arn
}

output "execution_role_arn" {
  description = "Role the ECS agent uses (image pull, logs, secrets)."
  value       = aws_iam_role.execution.arn
}

output "prometheus_dns_name" {
  description = "Cloud Map name with one A record per running task: Prometheus dns_sd_configs target (port = container port)."
  value       = "${aws_service_discovery_service.realtime.name}.${aws_service_discovery_private_dns_namespace.this.name}"
}
