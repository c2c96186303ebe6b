# Loads Formula/mlx-server.rb against a stand-in for Homebrew's DSL and prints what it
# declares as JSON, so the tests can compare it with pyproject.toml without Homebrew.
require "json"

module Language
  module Python
    module Virtualenv; end
  end
end

class Resource
  attr_reader :fields

  def initialize
    @fields = {}
  end

  def url(value, **_opts) = @fields["url"] = value
  def sha256(value) = @fields["sha256"] = value
end

class Formula
  class << self
    attr_reader :declared

    def inherited(subclass)
      super
      subclass.instance_variable_set(:@declared, { "depends_on" => [], "resources" => {} })
    end

    %w[desc homepage url sha256 license].each do |name|
      define_method(name) { |value, **_opts| @declared[name] = value }
    end

    def depends_on(spec) = @declared["depends_on"] << (spec.is_a?(Hash) ? spec.keys.first : spec).to_s

    def resource(name, &block)
      r = Resource.new
      r.instance_eval(&block)
      @declared["resources"][name] = r.fields
    end

    def service(&block) = @declared["service"] = !block.nil?
    def test(&block) = @declared["test"] = !block.nil?
  end
end

require File.expand_path(ARGV.fetch(0))
klass = Formula.subclasses.fetch(0)
out = klass.declared.merge(
  "class" => klass.name,
  "install" => klass.instance_methods(false).include?(:install),
  "virtualenv" => klass.include?(Language::Python::Virtualenv),
)
puts JSON.generate(out)
