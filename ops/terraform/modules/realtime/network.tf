# Security groups, least privilege:
#   internet --80/443--> ALB --container port--> tasks --5432--> Aurora
#                                                      --6379--> ElastiCache
#                                                      --443---> AWS APIs, Cognito JWKS (NAT / endpoints)
#   Prometheus --container port (/metrics)--> tasks
# DNS to the VPC resolver is not subject to security groups. Groups are named by prefix so that
# create_before_destroy can replace one without a name clash.

resource "aws_security_group" "alb" {
  name_prefix = "${local.name}-rt-alb-"
  description = "zedi-sync ALB: HTTPS (and the HTTP redirect) from the editors"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${local.name}-realtime-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "task" {
  name_prefix = "${local.name}-rt-task-"
  description = "zedi-sync tasks: traffic from the ALB and Prometheus only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${local.name}-realtime-task" })

  lifecycle {
    create_before_destroy = true
  }
}

# ---- ALB -------------------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.alb_ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS / wss from the editors"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  # checkov:skip=CKV_AWS_260:Port 80 only answers a 301 redirect to HTTPS (aws_lb_listener.http_redirect); nothing is served over plain HTTP.
  for_each = toset(var.alb_ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTP, redirected to HTTPS"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_task" {
  security_group_id            = aws_security_group.alb.id
  description                  = "Forward to the zedi-sync tasks (traffic and health checks)"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = aws_security_group.task.id
}

# ---- tasks -----------------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "task_from_alb" {
  security_group_id            = aws_security_group.task.id
  description                  = "WebSockets and /health from the ALB"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_ingress_rule" "task_from_prometheus" {
  for_each = toset(var.metrics_scraper_security_group_ids)

  security_group_id            = aws_security_group.task.id
  description                  = "Prometheus scraping /metrics"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_egress_rule" "task_to_database" {
  security_group_id            = aws_security_group.task.id
  description                  = "Aurora PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
  referenced_security_group_id = var.database_security_group_id
}

resource "aws_vpc_security_group_egress_rule" "task_to_redis" {
  count = var.redis_security_group_id == null ? 0 : 1

  security_group_id            = aws_security_group.task.id
  description                  = "ElastiCache Redis (TLS)"
  ip_protocol                  = "tcp"
  from_port                    = var.redis_port
  to_port                      = var.redis_port
  referenced_security_group_id = var.redis_security_group_id
}

resource "aws_vpc_security_group_egress_rule" "task_to_https" {
  security_group_id = aws_security_group.task.id
  description       = "HTTPS: ECR image pull, Secrets Manager, CloudWatch metrics and logs, Cognito JWKS"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# ---- the data stores accept the tasks ----------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "database_from_task" {
  security_group_id            = var.database_security_group_id
  description                  = "${local.name} zedi-sync tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
  referenced_security_group_id = aws_security_group.task.id
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_task" {
  count = var.redis_security_group_id == null ? 0 : 1

  security_group_id            = var.redis_security_group_id
  description                  = "${local.name} zedi-sync tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.redis_port
  to_port                      = var.redis_port
  referenced_security_group_id = aws_security_group.task.id
}
