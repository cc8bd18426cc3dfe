# Internet-facing ALB: TLS ends here, wss:// upgrades are forwarded to the tasks over plain HTTP
# inside the VPC, with stickiness per browser.

resource "aws_lb" "this" {
  # checkov:skip=CKV2_AWS_28:No per-service WAF in this design: WAF sees only the WebSocket upgrade request, never the frames; access is decided by the daemon (JWT per document, Origin allow-list). An organisation-wide web ACL (Firewall Manager) can still be attached.
  # checkov:skip=CKV_AWS_150:Deletion protection is var.alb_deletion_protection: on by default and in prod, off in dev so the environment can be torn down.
  name                       = "${local.name}-rt"
  internal                   = false
  load_balancer_type         = "application"
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection

  # WebSockets sit idle between edits. The daemon pings every 15 s (timeouts.ping_interval_ms)
  # and closes sockets silent for 60 s (timeouts.idle_ms) itself, so the ALB's idle cut (3600 s,
  # the design's value; the ALB allows up to 4000) never decides a live connection's fate.
  idle_timeout = 3600

  dynamic "access_logs" {
    for_each = var.alb_access_logs_bucket == null ? [] : [var.alb_access_logs_bucket]

    content {
      bucket  = access_logs.value
      prefix  = "${local.name}-realtime"
      enabled = true
    }
  }

  tags = local.tags
}

resource "aws_lb_target_group" "realtime" {
  # Plain HTTP to the tasks: TLS ends at the ALB, and the tasks accept traffic only from the
  # ALB's security group inside the VPC.
  name                 = "${local.name}-rt"
  port                 = var.container_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = local.deregistration_delay_secs

  # A browser keeps talking to the same task across reconnects (documents stay warm there).
  stickiness {
    type            = "lb_cookie"
    cookie_duration = 86400
    enabled         = true
  }

  # GET /health: 200 while serving (also when the store is degraded: editors are still served
  # from memory), 503 while draining.
  health_check {
    enabled             = true
    path                = "/health"
    port                = "traffic-port"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.realtime.arn
  }

  tags = local.tags
}

# /metrics is for Prometheus inside the VPC (network.tf), not for the internet.
resource "aws_lb_listener_rule" "hide_metrics" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  condition {
    path_pattern {
      values = ["/metrics", "/metrics/*"]
    }
  }

  action {
    type = "fixed-response"

    fixed_response {
      content_type = "text/plain"
      message_body = "not found"
      status_code  = "404"
    }
  }

  tags = local.tags
}

resource "aws_lb_listener" "http_redirect" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }

  tags = local.tags
}

resource "aws_route53_record" "realtime" {
  count = var.route53_zone_id == null ? 0 : 1

  zone_id = var.route53_zone_id
  name    = var.domain_name
  type    = "A"

  alias {
    name                   = aws_lb.this.dns_name
    zone_id                = aws_lb.this.zone_id
    evaluate_target_health = true
  }
}
