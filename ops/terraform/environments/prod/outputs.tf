# No NAT gateway is created here (the tasks use the network stack's egress), so there are no
# NAT addresses to output.

output "url" {
  description = "wss:// URL for the providers."
  value       = module.realtime.url
}

output "alb_dns_name" {
  description = "ALB DNS name (alias target of the realtime host name)."
  value       = module.realtime.alb_dns_name
}

output "alb_zone_id" {
  description = "ALB hosted zone id."
  value       = module.realtime.alb_zone_id
}

output "cluster_name" {
  description = "ECS cluster."
  value       = module.realtime.cluster_name
}

output "service_name" {
  description = "ECS service."
  value       = module.realtime.service_name
}

output "log_group_name" {
  description = "CloudWatch log group."
  value       = module.realtime.log_group_name
}

output "metric_namespace" {
  description = "CloudWatch namespace of ActiveConnections."
  value       = module.realtime.metric_namespace
}

output "task_security_group_id" {
  description = "Security group of the tasks."
  value       = module.realtime.task_security_group_id
}

output "prometheus_dns_name" {
  description = "Cloud Map name for Prometheus dns_sd_configs."
  value       = module.realtime.prometheus_dns_name
}
